"""Shared fixtures: the local HTTPS feed server."""

pytest_plugins = ["tests.feedserver"]
