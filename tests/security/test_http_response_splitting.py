"""Response splitting (THREATS.md A7: HT-09): nothing a client sends, percent-encoded, raw or
hidden in UTF-8, becomes a header line of the gateway's answer: return targets, claims, scopes,
paths and request ids, over raw sockets to a real gateway process."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import pytest
from support.raw_http import (
    assert_clean_head,
    exchange,
    get,
)
from support.served import Served
from support.upstream import RecordingUpstream

pytestmark = pytest.mark.threat("HT-09")

NAVIGATE: Final = (b"Accept: text/html", b"Sec-Fetch-Mode: navigate")


CLAIMS_WITH_ESCAPED_CRLF: Final = (
    b"%7B%22id_token%22%3A%7B%22acrs%22%3A%7B%22value%22%3A%22%5Cr%5CnSet-Cookie%3A%20evil%3D1"
    b"%22%7D%7D%7D"
)


@dataclass(frozen=True)
class Splitting:
    id: str
    raw: bytes
    allowed: frozenset[int]


SPLITTINGS: Final = [
    Splitting(
        "login-return-percent-crlf",
        get(b"/.auth/login/aad?post_login_redirect_uri=/x%0d%0aSet-Cookie:%20evil=1", *NAVIGATE),
        frozenset({400}),
    ),
    Splitting(
        "login-return-percent-crlf-location",
        get(
            b"/.auth/login/aad?post_login_redirect_uri=%0d%0aLocation:%20https://evil.example/",
            *NAVIGATE,
        ),
        frozenset({400}),
    ),
    Splitting(
        "login-return-utf8-whose-low-bytes-are-crlf",
        get(
            b"/.auth/login/aad?post_login_redirect_uri=/x%E5%98%8A%E5%98%8DSet-Cookie:%20evil=1",
            *NAVIGATE,
        ),
        frozenset({400}),
    ),
    Splitting(
        "login-return-raw-crlf",
        get(b"/.auth/login/aad?post_login_redirect_uri=/x\r\nSet-Cookie: evil=1", *NAVIGATE),
        frozenset({400}),
    ),
    Splitting(
        "logout-return-percent-crlf",
        get(
            b"/.auth/logout?post_logout_redirect_uri=/x%0d%0aSet-Cookie:%20evil=1",
            *NAVIGATE,
            cookie=True,
        ),
        frozenset({400}),
    ),
    Splitting(
        "sign-in-redirect-from-path-percent-crlf",
        get(b"/nav%0d%0aSet-Cookie:%20evil=1", *NAVIGATE),
        frozenset({302, 400, 404}),
    ),
    Splitting(
        "sign-in-redirect-from-path-utf8-lookalike",
        get(b"/nav%E5%98%8A%E5%98%8DSet-Cookie:%20evil=1?x=%0d%0a", *NAVIGATE),
        frozenset({302, 400}),
    ),
    Splitting(
        "claims-json-with-escaped-crlf",
        get(b"/.auth/login/aad?claims=" + CLAIMS_WITH_ESCAPED_CRLF, *NAVIGATE),
        frozenset({302, 400}),
    ),
    Splitting(
        "claims-with-raw-crlf",
        get(b"/.auth/login/aad?claims=%7B%22a%22%3A1%7D%0d%0aSet-Cookie:%20evil=1", *NAVIGATE),
        frozenset({400}),
    ),
    Splitting(
        "scope-percent-crlf",
        get(b"/.auth/login/aad?scope=openid%0d%0aSet-Cookie:%20evil=1", *NAVIGATE),
        frozenset({400}),
    ),
    Splitting(
        "request-id-bare-cr",
        get(b"/.auth/healthz", b"X-Request-Id: abcdefgh\rSet-Cookie: evil=1"),
        frozenset({400}),
    ),
]


@pytest.mark.parametrize("case", SPLITTINGS, ids=[c.id for c in SPLITTINGS])
def test_no_response_splitting(
    served: Served, recorder: RecordingUpstream, case: Splitting
) -> None:
    result = exchange(served.port, case.raw.replace(b"{cookie}", served.cookie_line))
    if not result.replies and case.allowed == {400}:
        assert result.closed  # refused without an answer: nothing was split either
        return
    assert result.replies, result.leftover
    reply = result.replies[0]
    assert reply.status in case.allowed, (reply.status, reply.head)
    assert_clean_head(reply)
    assert b"Traceback" not in reply.body
    assert not [c for c in reply.header("Set-Cookie") if "evil" in c]


@pytest.mark.parametrize(
    "supplied",
    [
        "abcdefgh%0d%0aSet-Cookie:%20evil=1",
        "<script>alert(1)</script>",
        "abcdefgh\u2028Set-Cookie: evil=1",
        "abcdefgh Set-Cookie: evil=1",
        "a" * 65,
        "short",
        "../../etc/passwd",
    ],
    ids=ascii,
)
@pytest.mark.parametrize("target", [b"/.auth/healthz", b"/rid"])
def test_unsafe_request_ids_are_replaced_everywhere(
    served: Served, recorder: RecordingUpstream, supplied: str, target: bytes
) -> None:
    mark = recorder.mark()
    raw = get(target, b"X-Request-Id: " + supplied.encode(), cookie=True)
    result = exchange(served.port, raw.replace(b"{cookie}", served.cookie_line))
    [reply] = result.replies
    assert reply.status == 200
    assert_clean_head(reply)
    [rid] = reply.header("X-Request-Id")
    assert rid != supplied and re.fullmatch(r"[0-9a-f]{32}", rid)
    assert supplied.encode() not in reply.head
    if target == b"/rid":
        [seen] = recorder.since(mark)
        assert seen.header("X-Request-Id") == [rid]  # the upstream gets the gateway's id only


def test_a_safe_request_id_is_kept_end_to_end(served: Served, recorder: RecordingUpstream) -> None:
    mark = recorder.mark()
    raw = get(b"/rid", b"X-Request-Id: trace.4711-ok_x", cookie=True)
    [reply] = exchange(served.port, raw.replace(b"{cookie}", served.cookie_line)).replies
    assert reply.header("X-Request-Id") == ["trace.4711-ok_x"]
    [seen] = recorder.since(mark)
    assert seen.header("X-Request-Id") == ["trace.4711-ok_x"]
