"""Fixtures for the whole suite live in tests/support; this file only registers them."""

pytest_plugins = ["support.idp", "support.fixtures"]
