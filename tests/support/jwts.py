"""JWTs in tests: how one looks in text (JWT_MARK, FAKE_JWT), and crafting real ones for the
bearer and id-token tests."""

from __future__ import annotations

from typing import Final

# base64url of '{"': the start of every JWT header and payload, so of every token in any text.
JWT_MARK: Final = "eyJ"
# Shaped like a JWT, signed by no one: a token an error message or a stored record might carry.
FAKE_JWT: Final = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJsZWFrZWQifQ.c2lnbmF0dXJlLXNlY3JldA"
