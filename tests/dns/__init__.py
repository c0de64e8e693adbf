"""Tests of blockd.dns."""
