"""The suite's fixtures and the `threat` marker's checks live in the test kit (tests/support); this
file only registers them."""

pytest_plugins = ["support.idp", "support.fixtures", "support.otel", "support.threats"]
