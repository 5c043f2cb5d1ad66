"""SessionRecord.sid: the provider's sign-in session named by the kept id_token, which a session
moved during a cookie-secret rotation takes along into the back-channel logout index."""

from __future__ import annotations

import base64
import json

import pytest

from gateway.sessions.store import SessionRecord


def record(id_token: str) -> SessionRecord:
    return SessionRecord("u", "h", {}, 0.0, 1.0, id_token=id_token)


def token(payload: object) -> str:
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJSUzI1NiJ9.{body}.c2ln"


def test_the_id_tokens_sid_is_read() -> None:
    assert record(token({"sub": "s", "sid": "sso-1"})).sid == "sso-1"


@pytest.mark.parametrize(
    "id_token",
    [
        "",
        "not a token",
        "a.!!!.c",
        token(["sid"]),
        token({"sub": "s"}),
        token({"sid": 7}),
        token({"sid": ""}),
        token({"sid": "x" * 257}),
    ],
)
def test_anything_else_is_no_sid(id_token: str) -> None:
    assert record(id_token).sid is None
