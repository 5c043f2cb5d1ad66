"""Unit tests of gateway.store: the rules of the Sentinel master watch."""
