"""runbook: run chains of Nexadata workflows from a plan kept in git."""

__version__ = "0.1.0"
