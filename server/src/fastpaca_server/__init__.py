"""Fastpaca server: an append-only message log and a token-budgeted LLM window per context."""

__version__ = "0.1.0"
