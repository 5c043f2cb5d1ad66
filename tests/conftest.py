"""The suite's fixtures live in the test kit (tests/support); this file only registers them."""

pytest_plugins = ["support.idp", "support.fixtures", "support.otel"]
