"""Hostile tests for the worker processes: what a compromised worker may send."""
