"""Shared fixtures: the local HTTPS feed server and the loopback DNS upstream."""

pytest_plugins = ["tests.feedserver", "tests.dnsupstream"]
