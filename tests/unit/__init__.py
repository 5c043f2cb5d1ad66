"""Unit tests, one module under test each, laid out like the repository: for example
tests/unit/gateway/auth/test_headers.py tests gateway/auth/headers.py; tests/unit/devidp tests the
development identity provider and tests/unit/bench the benchmark scripts. They still use real
sockets and processes wherever the module under test talks to them."""
