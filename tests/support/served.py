"""A `python -m gateway serve` process in front of a RecordingUpstream with alice signed in, for
the tests that talk to the gateway over raw sockets (tests/security/conftest.py makes fixtures of
it), and the check that a clean request still gets its own answer after an attack."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from support.browser import Browser
from support.gateway import (
    PUBLIC_URL,
    SESSION_COOKIE,
    GatewayProcess,
    LogTail,
    idp_ssl,
    settings_for,
)
from support.raw_http import exchange
from support.upstream import RecordingUpstream, Seen


@dataclass
class Served:
    """A gateway process, its log as it is written, and alice's session cookie."""

    process: GatewayProcess
    log: LogTail
    cookie: str

    @property
    def port(self) -> int:
        return self.process.port

    @property
    def cookie_line(self) -> bytes:
        return f"Cookie: {SESSION_COOKIE}={self.cookie}\r\n".encode()


async def _session_cookie(url: str, idp: Any, user: str) -> str:
    browser = Browser(url, PUBLIC_URL, idp_ssl(idp.ca_path))
    try:
        response = await browser.sign_in("/", user)
        assert response.status == 302, await response.text()
        value = browser.cookie(SESSION_COOKIE)
        assert value is not None
        return value
    finally:
        await browser.close()
        await asyncio.sleep(0.05)  # let TLS transports to the identity provider finish closing


def session_cookie(url: str, idp: Any, user: str = "alice") -> str:
    """Sign `user` in at the gateway at `url` (from a thread with no event loop running); the
    value of the session cookie it sets."""
    return asyncio.run(_session_cookie(url, idp, user))


def stop_gateway(process: GatewayProcess, log: LogTail) -> None:
    """SIGTERM and wait; the LogTail has been reading stderr all along (no communicate())."""
    process.halt(10)
    log.join()
    if process.process.stderr is not None:
        process.process.stderr.close()


def start_served(idp: Any, recorder: RecordingUpstream) -> Iterator[Served]:
    """A generator for fixtures: the gateway in front of `recorder`, alice signed in."""
    process = GatewayProcess(settings_for(idp, recorder.url))
    log = LogTail(process.process)
    try:
        asyncio.run(process.ready())
        yield Served(process, log, session_cookie(process.url, idp))
    finally:
        stop_gateway(process, log)


def check_after(served: Served, recorder: RecordingUpstream, mark: int, tag: str) -> list[Seen]:
    """A clean request after the case gets its own answer; what the upstream received meanwhile
    (the clean request included) comes back."""
    after = f"/after-{tag}"
    result = exchange(
        served.port,
        f"GET {after} HTTP/1.1\r\nHost: app.test\r\nAccept: application/json\r\n".encode()
        + served.cookie_line
        + b"Connection: close\r\n\r\n",
    )
    assert [r.status for r in result.replies] == [200]
    assert result.replies[0].echo()["raw_path"] == after  # not another request's answer
    window = recorder.since(mark)
    assert window[-1].raw_path == after
    return window[:-1]
