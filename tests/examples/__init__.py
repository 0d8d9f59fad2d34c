"""Tests that run the examples under examples/ against a real server."""
