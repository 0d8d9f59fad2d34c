"""The benchmark harness behind ``bench/run.py``: servers, load, figures, report."""
