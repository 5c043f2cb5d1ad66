"""The upstream HTTP/1.1 client (gateway.upstream.client) against a scripted raw upstream on
loopback.

The upstream here is a plain TCP server that records every byte it receives and answers with
exactly the bytes a case gives, so framing, malformed answers and connection reuse are checked at
the byte level. The client's safety rule under test throughout: a connection whose framing is in
doubt is never used again, so one user's request can never receive the answer meant for another
(THREATS.md A7, on the response side: smuggling, lenient grammar, splitting, resource limits).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

import pytest
import trustme
import uvloop
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry, Counter, Gauge
from yarl import URL

from gateway.errors import UpstreamTimeout, UpstreamUnavailable
from gateway.upstream.client import MAX_HEAD_BYTES, MAX_HEAD_FIELDS, UpstreamPool


@dataclass
class Reply:
    data: bytes = b""
    late: bytes = b""  # written `late_delay` seconds after `data`, on the same connection
    late_delay: float = 0.0
    close: bool = False  # close the connection after writing `data`
    delay: float = 0.0  # before writing
    silent: bool = False  # write nothing, keep the connection open
    early: bool = False  # answer after the head, without reading the body
    reset: bool = False  # after writing, end the connection with a TCP reset


OK = Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def sized(size: int) -> Reply:
    return Reply(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size)


@dataclass
class RawUpstream:
    """Answers the n-th request (counted over all connections) with `answer(n)`."""

    answer: Callable[[int], Reply]
    heads: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    close_reused: bool = False  # close, unanswered, any request but a connection's first
    port: int = 0
    scheme: str = "http"

    @property
    def url(self) -> URL:
        return URL(f"{self.scheme}://127.0.0.1:{self.port}")

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.append(task)
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        self.writers.append(writer)
        served = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                    self.heads.append(head)
                    reply = self.answer(len(self.heads) - 1)
                    body = b"" if reply.early else await self._body(reader, head)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return  # the client closed the connection
                self.bodies.append(body)
                if reply.delay:
                    await asyncio.sleep(reply.delay)
                if reply.silent:
                    await self.stopping.wait()
                    return
                served += 1
                if self.close_reused and served > 1:
                    return
                writer.write(reply.data)
                await writer.drain()
                if reply.late:
                    self.tasks.append(asyncio.create_task(_late(writer, reply)))
                if reply.reset:
                    await asyncio.sleep(0.05)  # the bytes are delivered before the reset
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if reply.close:
                    return
        finally:
            self.open_now -= 1
            writer.close()

    @staticmethod
    async def _body(reader: asyncio.StreamReader, head: bytes) -> bytes:
        lines = head.decode("latin-1").lower().split("\r\n")
        length = next(
            (int(h.split(":", 1)[1]) for h in lines if h.startswith("content-length:")), 0
        )
        if "transfer-encoding: chunked" in lines:
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
                body += (await reader.readexactly(size + 2))[:-2]
                if size == 0:
                    return body
        return await reader.readexactly(length)


async def _late(writer: asyncio.StreamWriter, reply: Reply) -> None:
    await asyncio.sleep(reply.late_delay)
    with contextlib.suppress(ConnectionError):
        writer.write(reply.late)
        await writer.drain()


@contextlib.asynccontextmanager
async def upstream(
    answer: Callable[[int], Reply], tls: ssl.SSLContext | None = None
) -> AsyncIterator[RawUpstream]:
    raw = RawUpstream(answer, scheme="https" if tls else "http")
    server = await asyncio.start_server(raw.serve, "127.0.0.1", 0, ssl=tls)
    raw.port = server.sockets[0].getsockname()[1]
    try:
        yield raw
    finally:
        server.close()
        raw.stopping.set()
        for writer in raw.writers:
            writer.close()
        await asyncio.gather(*raw.tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def pool_for(raw: RawUpstream, **options: float) -> AsyncIterator[UpstreamPool]:
    settings: dict[str, float] = {"connect_timeout": 2.0, "read_timeout": 2.0, "limit": 8}
    settings.update(options)
    pool = UpstreamPool(
        raw.url,
        connect_timeout=settings["connect_timeout"],
        read_timeout=settings["read_timeout"],
        limit=int(settings["limit"]),
        idle_seconds=settings.get("idle_seconds", 15.0),
    )
    try:
        yield pool
    finally:
        await pool.close()


class Body:
    """A request body arriving in pieces, as the client's stream delivers it."""

    def __init__(self, *pieces: bytes) -> None:
        self._pieces = list(pieces)

    async def readany(self) -> bytes:
        return self._pieces.pop(0) if self._pieces else b""


async def fetch(
    pool: UpstreamPool, method: str = "GET", headers: CIMultiDict[str] | None = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    async with await pool.send(method, "/x", headers or CIMultiDict(), None) as response:
        body = b""
        while chunk := await response.next_chunk():
            body += chunk
        return response.status, response.headers, body


# A framing, what the caller gets, and whether the connection may carry the next request.
FRAMINGS = [
    pytest.param(
        "GET",
        Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
        200,
        b"hello",
        True,
        id="content-length",
    ),
    pytest.param(
        "GET",
        Reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nhe\r\n3;ext=1\r\nllo\r\n0\r\nX-Trailer: t\r\n\r\n"
        ),
        200,
        b"hello",
        True,
        id="chunked-with-extension-and-trailer",
    ),
    pytest.param(
        "GET",
        Reply(b"HTTP/1.1 200 OK\r\n\r\nhello until close", close=True),
        200,
        b"hello until close",
        False,
        id="until-close",
    ),
    pytest.param(
        "HEAD",
        Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
        200,
        b"",
        False,  # the announced body could still come, late: never reused
        id="head-with-length",
    ),
    pytest.param("GET", Reply(b"HTTP/1.1 204 No Content\r\n\r\n"), 204, b"", True, id="204"),
    pytest.param(
        "GET",
        Reply(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"),
        304,
        b"",
        False,  # as after a HEAD
        id="304-with-length",
    ),
    pytest.param(
        "GET",
        Reply(b'HTTP/1.1 304 Not Modified\r\nETag: "a"\r\n\r\n'),
        304,
        b"",
        True,
        id="304-without-length",
    ),
    pytest.param(
        "GET",
        Reply(
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        ),
        200,
        b"ok",
        True,
        id="informational-answers-skipped",
    ),
    pytest.param(
        "GET",
        Reply(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"),
        200,
        b"ok",
        False,
        id="connection-close",
    ),
    pytest.param(
        "GET",
        Reply(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        200,
        b"ok",
        False,
        id="http-1.0",
    ),
]


@pytest.mark.parametrize(("method", "reply", "status", "body", "reused"), FRAMINGS)
async def test_framings(method: str, reply: Reply, status: int, body: bytes, reused: bool) -> None:
    async with upstream(lambda n: reply if n == 0 else OK) as raw, pool_for(raw) as pool:
        got_status, headers, got_body = await fetch(pool, method)
        assert (got_status, got_body) == (status, body)
        assert all(name.lower() != "x-trailer" for name, _ in headers)
        assert await fetch(pool) == (200, [("Content-Length", "2")], b"ok")
        assert raw.connections == (1 if reused else 2)


async def test_headers_of_the_final_answer_only() -> None:
    reply = Reply(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
        b"HTTP/1.1 200 Fine\r\nX-A: 1\r\nX-A: 2\r\nContent-Length: 0\r\n\r\n"
    )
    async with (
        upstream(lambda n: reply) as raw,
        pool_for(raw) as pool,
        await pool.send("GET", "/", CIMultiDict(), None) as response,
    ):
        assert (response.status, response.reason) == (200, "Fine")
        assert response.headers == [("X-A", "1"), ("X-A", "2"), ("Content-Length", "0")]
        assert response.content_length == 0


# Answers llhttp or the client's limits refuse. Each must fail as 502 and leave no connection
# behind that could carry another request.
MALFORMED = {
    "content-length-and-chunked": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "two-content-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
    "bare-cr-in-header": b"HTTP/1.1 200 OK\r\nX-A: 1\rTransfer-Encoding: chunked\r\n"
    b"Content-Length: 2\r\n\r\nok",
    "lf-only-lines": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 2\r\n\r\nok",
    "arabic-indic-length": "HTTP/1.1 200 OK\r\nContent-Length: \u0661\u0660\r\n\r\n".encode(),
    "signed-length": b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
    "space-before-colon": b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
    "chunk-extension-bare-lf": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"1;a\nb\r\nA\r\n0\r\n\r\n",
    "bad-chunk-size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nA\r\n0\r\n\r\n",
    "bad-status-line": b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok",
    "bad-version": "HTTP/1.\U0001d7d9 200 OK\r\nContent-Length: 2\r\n\r\nok".encode(),
    "not-http": b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
    "head-too-large": b"HTTP/1.1 200 OK\r\nX-Big: "
    + b"a" * MAX_HEAD_BYTES
    + b"\r\nContent-Length: 2\r\n\r\nok",
    "too-many-fields": b"HTTP/1.1 200 OK\r\n"
    + b"".join(b"X-%d: 1\r\n" % i for i in range(MAX_HEAD_FIELDS + 1))
    + b"Content-Length: 2\r\n\r\nok",
    "endless-header": b"HTTP/1.1 200 OK\r\nX-Endless: " + b"a" * (4 * 1024 * 1024),
    "endless-trailer": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n"
    b"X-Endless: " + b"a" * (4 * 1024 * 1024),
    "switching-protocols-unasked": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n"
    b"Connection: Upgrade\r\n\r\n",
}


@pytest.mark.parametrize("answer", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_answers_fail_closed(answer: bytes) -> None:
    async with upstream(lambda n: Reply(answer) if n == 0 else OK) as raw, pool_for(raw) as pool:
        with pytest.raises(UpstreamUnavailable):
            await fetch(pool)
        assert await fetch(pool) == (200, [("Content-Length", "2")], b"ok")
        assert raw.connections == 2  # the doubtful connection was not used again


STRAY = {
    "a-second-answer": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret",
    "bytes-past-the-length": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\noksecret",
    "a-body-on-a-204": b"HTTP/1.1 204 No Content\r\n\r\nsecret",
}


@pytest.mark.parametrize("answer", STRAY.values(), ids=STRAY.keys())
async def test_bytes_after_an_answer_never_reach_the_next_request(answer: bytes) -> None:
    mine = Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nmine")
    async with upstream(lambda n: Reply(answer) if n == 0 else mine) as raw, pool_for(raw) as pool:
        await fetch(pool)
        await asyncio.sleep(0.05)  # the stray bytes have arrived by now
        status, _, body = await fetch(pool)
        assert (status, body) == (200, b"mine")
        assert raw.connections == 2


async def test_bytes_after_a_head_answer_close_the_connection() -> None:
    answer = Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
    mine = Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nmine")
    async with upstream(lambda n: answer if n == 0 else mine) as raw, pool_for(raw) as pool:
        assert (await fetch(pool, "HEAD"))[2] == b""
        await asyncio.sleep(0.05)
        assert (await fetch(pool))[2] == b"mine"
        assert raw.connections == 2


EVIL: Final = b"HTTP/1.1 200 OK\r\nContent-Length: 25\r\n\r\n<script>steal()</script>\n"
# Answers an application may follow with bytes of their own, late (issue 14 item 14).
LATE: Final = {
    "head-then-its-body": ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", b"hello"),
    "head-then-an-answer": ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", EVIL),
    "head-chunked-then-an-answer": (
        "HEAD",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"5\r\nhello\r\n0\r\n\r\n" + EVIL,
    ),
    "head-without-length-then-an-answer": ("HEAD", b"HTTP/1.1 200 OK\r\n\r\n", EVIL),
    "204-with-length-then-an-answer": (
        "GET",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 25\r\n\r\n",
        EVIL,
    ),
    "304-with-length-then-an-answer": (
        "GET",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 25\r\n\r\n",
        EVIL,
    ),
    "304-chunked-then-an-answer": (
        "GET",
        b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
        EVIL,
    ),
}


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.1], ids=["at-once", "20ms", "100ms"])
@pytest.mark.parametrize("case", list(LATE), ids=list(LATE))
async def test_late_bytes_never_become_the_next_users_answer(case: str, delay: float) -> None:
    """The next request goes out at once on the pool (one connection allowed), and again after
    the late bytes; with every timing it gets its own answer, never the late bytes."""
    method, head, late = LATE[case]
    first = Reply(head, late=late, late_delay=delay)
    mine = Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nmine")
    async with upstream(lambda n: first if n == 0 else mine) as raw, pool_for(raw, limit=1) as pool:
        assert (await fetch(pool, method))[2] == b""
        assert await fetch(pool) == (200, [("Content-Length", "4")], b"mine")
        await asyncio.sleep(delay + 0.05)
        assert await fetch(pool) == (200, [("Content-Length", "4")], b"mine")
        assert raw.connections >= 2  # the first connection was never reused


INJECTIONS = {
    "lf-in-value": ("X-A", "1\nX-Injected: yes"),
    "crlf-in-value": ("X-A", "1\r\nX-Injected: yes"),
    "cr-in-value": ("X-A", "1\rX-Injected: yes"),
    "nul-in-value": ("X-A", "1\x00"),
    "crlf-in-name": ("X-A\r\nX-Injected", "yes"),
    "crlfcrlf-in-value": ("X-A", "1\r\n\r\nGET /smuggled HTTP/1.1"),
}


@pytest.mark.parametrize(("name", "value"), INJECTIONS.values(), ids=INJECTIONS.keys())
async def test_a_header_with_a_line_break_is_never_written(name: str, value: str) -> None:
    async with upstream(lambda n: OK) as raw, pool_for(raw) as pool:
        with pytest.raises(UpstreamUnavailable):
            await pool.send("GET", "/", CIMultiDict([(name, value)]), None)
        await asyncio.sleep(0.05)
        assert raw.heads == []
        assert raw.connections == 0


async def test_request_heads_and_bodies_as_sent() -> None:
    async with upstream(lambda n: OK) as raw, pool_for(raw) as pool:
        await fetch(pool, "GET", CIMultiDict([("X-Raw", "caf\udce9")]))
        await fetch(pool, "POST")
        await fetch(pool, "GET", CIMultiDict([("Host", "app.test")]))
        length = CIMultiDict([("Content-Length", "6")])
        async with await pool.send("PUT", "/up", length, Body(b"abc", b"def")) as response:
            assert response.status == 200
        async with await pool.send("POST", "/up", CIMultiDict(), Body(b"ab", b"cde")) as response:
            assert response.status == 200
    get, post, hosted, put, chunked = raw.heads
    host = f"Host: 127.0.0.1:{raw.url.port}".encode()
    # Bytes a client sent outside UTF-8 travel as they came.
    assert get == b"GET /x HTTP/1.1\r\n" + host + b"\r\nX-Raw: caf\xe9\r\n\r\n"
    assert post == b"POST /x HTTP/1.1\r\n" + host + b"\r\nContent-Length: 0\r\n\r\n"
    assert hosted == b"GET /x HTTP/1.1\r\nHost: app.test\r\n\r\n"
    assert put.startswith(b"PUT /up HTTP/1.1\r\n") and b"Content-Length: 6\r\n" in put
    assert b"Transfer-Encoding" not in put
    assert b"Transfer-Encoding: chunked\r\n" in chunked and b"Content-Length" not in chunked
    assert raw.bodies == [b"", b"", b"", b"abcdef", b"abcde"]
    assert raw.connections == 1  # every exchange ended cleanly: one connection throughout


async def test_a_reused_connection_closed_by_the_upstream_is_retried_once() -> None:
    # The upstream closes its kept-alive connection just as the second request arrives: the
    # request goes again on a new connection (it has no body and an idempotent method).
    async with (
        upstream(lambda n: Reply(close=True) if n == 1 else OK) as raw,
        pool_for(raw) as pool,
    ):
        assert (await fetch(pool))[0] == 200
        assert (await fetch(pool))[0] == 200
        assert raw.connections == 2 and len(raw.heads) == 3


@pytest.mark.parametrize(
    ("method", "pieces", "why"),
    [
        ("POST", None, "not idempotent"),
        ("PUT", (b"once",), "its body cannot be read twice"),
    ],
)
async def test_no_retry_when_a_second_send_could_repeat_or_lose_work(
    method: str, pieces: tuple[bytes, ...] | None, why: str
) -> None:
    body = Body(*pieces) if pieces is not None else None
    async with (
        upstream(lambda n: Reply(close=True) if n == 1 else OK) as raw,
        pool_for(raw) as pool,
    ):
        await fetch(pool)
        headers = CIMultiDict([("Content-Length", "4")] if body else [])
        with pytest.raises(UpstreamUnavailable):
            await pool.send(method, "/", headers, body)
        assert len(raw.heads) == 2, why


async def test_a_fresh_connection_closed_without_an_answer_is_not_retried() -> None:
    async with upstream(lambda n: Reply(close=True)) as raw, pool_for(raw) as pool:
        with pytest.raises(UpstreamUnavailable):
            await fetch(pool)
        assert len(raw.heads) == 1


async def test_an_answer_cut_short_fails_the_body() -> None:
    cut = Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", close=True)
    async with upstream(lambda n: cut) as raw, pool_for(raw) as pool:
        response = await pool.send("GET", "/", CIMultiDict(), None)
        with pytest.raises(UpstreamUnavailable, match="cut short"):
            await response.read()
        response.release()
        response = await pool.send("GET", "/", CIMultiDict(), None)
        assert await response.next_chunk() == b"abc"
        with pytest.raises(UpstreamUnavailable):
            await response.next_chunk()
        response.release()


async def test_silence_times_out() -> None:
    async with (
        upstream(lambda n: Reply(silent=True)) as raw,
        pool_for(raw, read_timeout=0.2) as pool,
    ):
        started = asyncio.get_running_loop().time()
        with pytest.raises(UpstreamTimeout):
            await fetch(pool)
        assert 0.15 < asyncio.get_running_loop().time() - started < 1.5


async def test_silence_inside_a_body_times_out() -> None:
    stalled = Reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n")
    async with upstream(lambda n: stalled) as raw, pool_for(raw, read_timeout=0.2) as pool:
        response = await pool.send("GET", "/", CIMultiDict(), None)
        assert await response.next_chunk() == b"ok"
        with pytest.raises(UpstreamTimeout):
            await response.next_chunk()
        response.release()


async def test_a_refused_connection_is_unavailable() -> None:
    async with upstream(lambda n: OK) as raw:
        url = raw.url
    pool = UpstreamPool(url, connect_timeout=1, read_timeout=1, limit=2)
    try:
        with pytest.raises(UpstreamUnavailable, match="could not be reached"):
            await fetch(pool)
        assert pool.open_connections == 0
    finally:
        await pool.close()


async def test_the_connection_limit_holds_under_concurrency() -> None:
    slow = Reply(OK.data, delay=0.05)
    async with upstream(lambda n: slow) as raw, pool_for(raw, limit=2) as pool:
        results = await asyncio.gather(*(fetch(pool) for _ in range(10)))
        assert [status for status, _, _ in results] == [200] * 10
        assert raw.most_open == 2
        assert pool.open_connections == 2 and pool.idle_connections == 2


async def test_a_waiting_request_gets_a_connection_when_one_closes() -> None:
    # The only connection is closed (not returned) after its answer: the waiter opens another.
    closing = Reply(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        close=True,
        delay=0.05,
    )
    async with upstream(lambda n: closing) as raw, pool_for(raw, limit=1) as pool:
        results = await asyncio.gather(*(fetch(pool) for _ in range(3)))
        assert [status for status, _, _ in results] == [200] * 3
        assert raw.connections == 3 and raw.most_open == 1


async def test_idle_connections_are_closed() -> None:
    async with upstream(lambda n: OK) as raw, pool_for(raw, idle_seconds=0.1) as pool:
        await fetch(pool)
        assert raw.open_now == 1
        await asyncio.sleep(0.4)
        assert raw.open_now == 0 and pool.open_connections == 0


async def test_reading_pauses_while_the_caller_does_not_read() -> None:
    size = 16 * 1024 * 1024
    big = sized(size)
    async with upstream(lambda n: big if n == 0 else OK) as raw, pool_for(raw) as pool:
        response = await pool.send("GET", "/", CIMultiDict(), None)
        await asyncio.sleep(0.3)
        # Most of the body still waits on the upstream's side: the client stopped reading.
        assert raw.writers[0].transport.get_write_buffer_size() > size // 2
        received = 0
        while chunk := await response.next_chunk():
            received += len(chunk)
        response.release()
        assert received == size
        assert await fetch(pool) == (200, [("Content-Length", "2")], b"ok")
        assert raw.connections == 1


async def test_an_exchange_leaves_no_garbage_cycles() -> None:
    # A reference cycle per request would be freed only by the cyclic collector, whose pauses
    # grow with the garbage: under load that showed as a p99 four times the median's.
    async with upstream(lambda n: OK) as raw, pool_for(raw) as pool:
        await fetch(pool)  # the connection exists before counting starts
        gc.collect()
        gc.disable()
        try:
            for _ in range(200):
                await fetch(pool)
            found = gc.collect()
        finally:
            gc.enable()
        assert found < 50, f"{found} objects in cycles after 200 requests"


class SlowBody:
    """A body that keeps coming: one piece every `pause` seconds, `pieces` in all."""

    def __init__(self, pieces: int, pause: float) -> None:
        self.pieces, self.pause, self.sent = pieces, pause, 0

    async def readany(self) -> bytes:
        if self.sent == self.pieces:
            return b""
        await asyncio.sleep(self.pause)
        self.sent += 1
        return b"x" * 1024


async def test_an_answer_before_the_body_is_sent_is_passed_on_and_the_upload_stops() -> None:
    refusal = Reply(
        b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n", close=True, early=True
    )
    async with upstream(lambda n: refusal if n == 0 else OK) as raw, pool_for(raw) as pool:
        body = SlowBody(pieces=1000, pause=0.01)
        length = CIMultiDict([("Content-Length", str(1000 * 1024))])
        async with await pool.send("POST", "/upload", length, body) as response:
            assert response.status == 413
        sent = body.sent
        await asyncio.sleep(0.1)
        assert body.sent == sent < 1000  # released: the upload was stopped, not drained
        assert await fetch(pool) == (200, [("Content-Length", "2")], b"ok")
        assert raw.connections == 2


async def test_a_body_still_moving_is_not_silence() -> None:
    # 0.5 s of upload with a 0.2 s read timeout: the application answers once it has it all.
    async with upstream(lambda n: OK) as raw, pool_for(raw, read_timeout=0.2) as pool:
        length = CIMultiDict([("Content-Length", str(25 * 1024))])
        async with await pool.send("PUT", "/", length, SlowBody(25, 0.02)) as response:
            assert response.status == 200
        assert raw.bodies == [b"x" * 25 * 1024]


async def test_a_caller_that_gives_up_closes_its_connection() -> None:
    async with upstream(lambda n: Reply(silent=True)) as raw, pool_for(raw) as pool:
        waiting = asyncio.create_task(pool.send("GET", "/", CIMultiDict(), None))
        await asyncio.sleep(0.1)
        assert raw.open_now == 1
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.sleep(0.05)
        assert pool.open_connections == 0 and pool.idle_connections == 0


async def test_a_caller_that_leaves_mid_body_closes_its_connection() -> None:
    size = 4 * 1024 * 1024
    big = sized(size)
    async with upstream(lambda n: big if n == 0 else OK) as raw, pool_for(raw) as pool:
        response = await pool.send("GET", "/", CIMultiDict(), None)
        assert await response.next_chunk()
        response.release()  # before the end of the body
        await asyncio.sleep(0.05)
        assert pool.open_connections == 0
        assert await fetch(pool) == (200, [("Content-Length", "2")], b"ok")
        assert raw.connections == 2


async def test_an_upload_that_stalls_times_out() -> None:
    # The client stopped sending and the application waits for the rest: silence both ways.
    async with upstream(lambda n: OK) as raw, pool_for(raw, read_timeout=0.2) as pool:
        length = CIMultiDict([("Content-Length", str(10 * 1024))])
        with pytest.raises(UpstreamTimeout):
            await pool.send("PUT", "/", length, SlowBody(10, 30.0))
        assert raw.bodies == []


async def test_tls_to_the_upstream_is_verified() -> None:
    authority = trustme.CA()
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(served)
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    async with upstream(lambda n: OK, tls=served) as raw:
        trusted = UpstreamPool(
            raw.url, connect_timeout=2, read_timeout=2, limit=2, ssl_context=trusting
        )
        default = UpstreamPool(raw.url, connect_timeout=2, read_timeout=2, limit=2)
        try:
            assert await fetch(trusted) == (200, [("Content-Length", "2")], b"ok")
            assert await fetch(trusted) == (200, [("Content-Length", "2")], b"ok")
            assert raw.connections == 1  # kept alive over TLS too
            with pytest.raises(UpstreamUnavailable, match="could not be reached"):
                await fetch(default)  # a certificate no trusted authority issued: refused
            assert len(raw.heads) == 2
        finally:
            await trusted.close()
            await default.close()


async def test_a_connection_whose_reader_held_back_is_read_again_when_reused() -> None:
    # The whole of a large answer arrives while its reader holds back (reading pauses), and the
    # caller leaves without reading it: the next request on the connection must still be read.
    size = 300 * 1024
    async with upstream(lambda n: sized(size) if n == 0 else OK) as raw, pool_for(raw) as pool:
        response = await pool.send("GET", "/", CIMultiDict(), None)
        await asyncio.sleep(0.2)
        response.release()
        started = asyncio.get_running_loop().time()
        assert await fetch(pool) == (200, [("Content-Length", "2")], b"ok")
        assert asyncio.get_running_loop().time() - started < 0.5


async def test_a_waiter_that_leaves_when_its_turn_comes_passes_the_turn_on() -> None:
    async with upstream(lambda n: OK) as raw, pool_for(raw, limit=1) as pool:
        first = await pool.send("GET", "/", CIMultiDict(), None)
        leaving = asyncio.create_task(fetch(pool))
        staying = asyncio.create_task(fetch(pool))
        await asyncio.sleep(0.05)
        await first.read()
        first.release()  # the connection is handed to `leaving`...
        leaving.cancel()  # ...which is cancelled before it runs
        assert (await asyncio.wait_for(staying, 2))[0] == 200
        assert leaving.cancelled()


async def test_waiting_callers_are_served_in_turn() -> None:
    slow = Reply(OK.data, delay=0.01)
    async with upstream(lambda n: slow) as raw, pool_for(raw, limit=1) as pool:
        served: list[str] = []

        async def busy() -> None:
            for _ in range(10):
                await fetch(pool)
                served.append("busy")

        async def patient() -> None:
            await asyncio.sleep(0.005)  # arrives while `busy` holds the only connection
            await fetch(pool)
            served.append("patient")

        await asyncio.gather(busy(), patient())
        assert served.index("patient") <= 1


async def test_an_answer_without_length_cut_by_a_reset_fails() -> None:
    cut = Reply(b"HTTP/1.1 200 OK\r\n\r\npartial body", reset=True)
    async with upstream(lambda n: cut) as raw, pool_for(raw) as pool:
        response = await pool.send("GET", "/", CIMultiDict(), None)
        with pytest.raises(UpstreamUnavailable):
            while await response.next_chunk():
                pass
        response.release()


async def test_a_retry_goes_to_a_connection_idle_for_less_time() -> None:
    # Both idle connections are closed by the application (its idle timeout): the retry opens
    # a new one instead of trying the other stale one.
    slow = Reply(OK.data, delay=0.05)
    async with upstream(lambda n: slow) as raw, pool_for(raw) as pool:
        raw.close_reused = False
        await asyncio.gather(fetch(pool), fetch(pool))
        assert raw.connections == 2
        raw.close_reused = True
        assert (await fetch(pool))[0] == 200
        assert raw.connections == 3


async def test_silence_inside_a_small_body_is_a_timeout() -> None:
    stalled = Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    async with upstream(lambda n: stalled) as raw, pool_for(raw, read_timeout=0.2) as pool:
        response = await pool.send("GET", "/", CIMultiDict(), None)
        with pytest.raises(UpstreamTimeout):
            await response.read()  # 504, as for silence before the answer
        response.release()


async def test_the_host_header_leaves_out_a_default_port() -> None:
    for origin, host in [
        ("http://app.test:80", "app.test"),
        ("https://app.test:443", "app.test"),
        ("http://app.test:8080/prefix", "app.test:8080"),
        ("http://[::1]:8080", "[::1]:8080"),
    ]:
        pool = UpstreamPool(URL(origin), connect_timeout=1, read_timeout=1, limit=1)
        head = pool.head("GET", "/", CIMultiDict(), chunked=False)
        assert head == f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode(), origin
        await pool.close()


async def test_a_body_longer_than_announced_is_never_sent() -> None:
    async with upstream(lambda n: OK) as raw, pool_for(raw) as pool:
        with pytest.raises(UpstreamUnavailable):
            await pool.send("PUT", "/", CIMultiDict([("Content-Length", "3")]), Body(b"abcdef"))
        await asyncio.sleep(0.05)
        assert raw.bodies == []  # not even the first three bytes: the whole piece was refused


async def test_open_connections_and_waits_are_measured() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("open", "open connections", registry=registry)
    waits = Counter("waits", "waits for a connection", registry=registry)
    slow = Reply(OK.data, delay=0.05)
    async with upstream(lambda n: slow) as raw:
        pool = UpstreamPool(
            raw.url, connect_timeout=2, read_timeout=2, limit=2, open_gauge=gauge, waits=waits
        )
        try:
            await asyncio.gather(*(fetch(pool) for _ in range(5)))
            assert registry.get_sample_value("open") == 2
            assert registry.get_sample_value("waits_total") == 3  # the three beyond the limit
        finally:
            await pool.close()
        await asyncio.sleep(0.05)
        assert registry.get_sample_value("open") == 0


# Every test above runs on both event loops: the gateway runs on uvloop by default, and the two
# differ in when callbacks, reads and timers run.
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def _on_both_loops(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    def run(loop: str, *args: Any, **kwargs: Any) -> None:
        with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
            assert type(runner.get_loop()).__module__.startswith(loop)
            runner.run(test(*args, **kwargs))

    signature = inspect.signature(test)
    loop = inspect.Parameter("loop", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    run.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[loop, *signature.parameters.values()]
    )
    run.__name__, run.__doc__ = test.__name__, test.__doc__
    run.pytestmark = [  # type: ignore[attr-defined]
        *getattr(test, "pytestmark", []),
        pytest.mark.parametrize("loop", LOOPS),
    ]
    return run


for _name, _test in list(globals().items()):
    if _name.startswith("test_") and inspect.iscoroutinefunction(_test):
        globals()[_name] = _on_both_loops(_test)
