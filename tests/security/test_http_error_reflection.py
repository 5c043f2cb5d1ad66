"""Error reflection (THREATS.md A7: HT-11): a malformed request line or header never comes back
in the error page or in the log (markup, ANSI escapes, fake log lines), and never carries the
session id into either; raw sockets to a real gateway process whose log is read as it is written."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

import pytest
from support.raw_http import (
    assert_clean_head,
    exchange,
    get,
    token,
)
from support.served import Served

pytestmark = pytest.mark.threat("HT-11")

# ---- HT-11: malformed requests are not reflected, in the error page or in the log ----


def sync_log(served: Served) -> None:
    """Make sure the gateway's log holds everything written before now: ask for a page whose
    path the gateway logs, and wait for it."""
    tag = token()
    exchange(served.port, get(f"/.auth/log-sync-{tag}".encode()))
    if not served.log.wait_for(tag.encode()):
        time.sleep(0.5)  # the gateway logs no such line (any more): give the pipe time instead


@dataclass(frozen=True)
class Reflection:
    id: str
    template: bytes  # {m}: a marker that must not come back; {cookie}: alice's Cookie line


REFLECTIONS: Final = [
    Reflection(
        "script-in-target-ansi-after-version",
        b"GET /<script>alert('{m}')</script> HTTP/1.1\x1b[31m\r\nHost: app.test\r\n\r\n",
    ),
    Reflection("ansi-in-method", b"G\x1b[2JET /{m} HTTP/1.1\r\nHost: app.test\r\n\r\n"),
    Reflection(
        "osc-title-sequence-in-target", b"GET /\x1b]0;{m}\x07 HTTP/1.1\r\nHost: app.test\r\n\r\n"
    ),
    Reflection("markup-as-method", b"<script>{m}</script> / HTTP/1.1\r\nHost: app.test\r\n\r\n"),
    Reflection("markup-in-version", b"GET / HTTP/<script>{m}</script>\r\nHost: app.test\r\n\r\n"),
    Reflection(
        "markup-and-ansi-in-header-value",
        b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Evil: <script>{m}</script>\x1b[2J\r\n\r\n",
    ),
    Reflection(
        "markup-as-header-name",
        b"GET / HTTP/1.1\r\nHost: app.test\r\n<script>{m}</script>: x\r\n\r\n",
    ),
    Reflection(
        "fake-log-line-in-header-value",
        b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Evil: x\x00\r\n{m} INFO admin signed in\r\n\r\n",
    ),
]


@pytest.mark.parametrize("case", REFLECTIONS, ids=[c.id for c in REFLECTIONS])
def test_malformed_requests_are_not_reflected(served: Served, case: Reflection) -> None:
    marker = f"ht11{token()}"
    raw = case.template.replace(b"{m}", marker.encode())
    logged_before = len(served.log.raw())
    result = exchange(served.port, raw)
    assert [r.status for r in result.replies] in ([400], []), result.replies
    assert result.closed
    page = b"".join(reply.head + reply.body for reply in result.replies)
    for reply in result.replies:
        assert_clean_head(reply)
    sync_log(served)
    log = served.log.raw()[logged_before:]
    problems = [
        f"{where} contains {what!r}"
        for where, text in (("the error page", page), ("the log", log))
        for what in (marker.encode(), b"<script", b"\x1b")
        if what in text
    ]
    assert problems == [], problems


def test_a_malformed_request_does_not_leak_the_session_cookie(served: Served) -> None:
    """A10 too: the parser's complaint about a header line must not carry the session id into
    the error page or the log."""
    raw = (
        b"GET / HTTP/1.1\r\nHost: app.test\r\n"
        + served.cookie_line.replace(b"\r\n", b"\x01\r\n")
        + b"\r\n"
    )
    result = exchange(served.port, raw)
    assert [r.status for r in result.replies] in ([400], [])
    sync_log(served)
    problems = [
        where
        for where, text in (
            ("the error page", b"".join(r.body for r in result.replies)),
            ("the log", served.log.raw()),
        )
        if served.cookie.encode() in text
    ]
    assert problems == [], f"the session id is in {problems}"
