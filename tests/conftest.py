"""Shared fixtures: the HTTPS feed server, the loopback DNS upstream, headless Chromium."""

pytest_plugins = ["tests.feedserver", "tests.dnsupstream", "tests.browser"]
