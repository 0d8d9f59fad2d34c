"""Tests of the documentation: runnable code blocks and the configuration table."""
