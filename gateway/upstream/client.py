"""The HTTP/1.1 client that carries proxied requests to the upstream: a pool of keep-alive
connections to the one upstream origin, each an asyncio protocol whose answers llhttp parses
(httptools). WebSockets are not carried here (proxy/forward.py opens those with aiohttp).

Sending a request to the application is the largest single cost of the hot path, and a general
client (aiohttp's ClientSession) spends most of it on features a reverse proxy never uses:
redirects, cookies, URL joining, auto headers, tracing hooks, per-request timers. This client
writes the request head as one string and reads the answer with one parser call per arrival.

- **Framing.** The head is built from what aiohttp's server already parsed; a header line with a
  CR, LF or NUL in it is refused before anything is written. A body goes with the client's
  Content-Length, else chunked; a body-less request with a method that carries a body gets
  `Content-Length: 0`; never more body than its Content-Length is sent. Answers are parsed by
  llhttp with no leniencies; an answer whose head (or trailer) grows over `MAX_HEAD_BYTES`, or
  whose head has over `MAX_HEAD_FIELDS` fields, fails as it arrives, as does one llhttp refuses.
  An answer without a length ends only with a clean close: a reset cuts it short.
- **Reuse.** A connection goes back to the pool only after a complete answer to a completely sent
  request, with keep-alive on both sides and no stray bytes after the answer, and only when the
  answer cannot still be followed by bytes of its own: never after a HEAD (an application may
  send the body it announced, late), nor after a 204 or 304 that announced a length or chunks.
  Otherwise it is closed: a connection whose framing is in doubt must never carry another user's
  request, since bytes arriving late would be read as that user's answer.
- **Retry.** A request with an idempotent method and no body is sent once more when a reused
  connection ends before the first byte of an answer: the application closed it while it was
  idle (RFC 9112 section 9.3.1). The retry goes on a connection that went idle later, or a new
  one, never on one idle as long (the same idle timeout has likely closed it too).
- **Turns.** Beyond `limit` connections, callers wait in line, at most `slot_wait` seconds
  (then UpstreamBusy, 503); a released connection is handed to the first of them, and one that
  leaves when its turn comes passes the turn on.
- **Time.** Connecting is bounded by `connect_timeout`; waiting for an answer, and for each part
  of its body, by `read_timeout` of silence on the connection (a request body still being sent
  counts as traffic). Idle connections close after `idle_seconds` (15 s, as aiohttp's client).
- **Back-pressure.** Reading from the application pauses while more than `BUFFER_BYTES` of body
  wait for the caller (and resumes before the connection serves anyone else); writing a request
  body waits while the application's socket is full.

Failures are the gateway's errors: UpstreamUnavailable (502) and UpstreamTimeout (504), raised
by `send` before an answer exists and by `read`/`next_chunk` while its body is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
from collections import deque
from typing import Final, Protocol, cast

import httptools
from multidict import CIMultiDict
from prometheus_client import Counter, Gauge
from yarl import URL

from gateway.errors import GatewayError, UpstreamBusy, UpstreamTimeout, UpstreamUnavailable

MAX_HEAD_BYTES: Final = 64 * 1024
MAX_HEAD_FIELDS: Final = 256
BUFFER_BYTES: Final = 256 * 1024
IDLE_SECONDS: Final = 15.0
# Methods a request without a body may be sent again with (RFC 9110 section 9.2.2).
IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# Methods whose body-less requests carry no Content-Length: 0 (as aiohttp's client did).
BODYLESS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_UNREACHABLE: Final = "the application could not be reached"
_CUT_SHORT: Final = "the application's answer was cut short"
_TOO_SLOW: Final = "the application did not answer in time"
_HEAD_TOO_LARGE: Final = "the application's answer has a head (or trailer) over 64 KiB"


class BodySource(Protocol):
    """Where a request body comes from (aiohttp's StreamReader is one): b"" at its end."""

    async def readany(self) -> bytes: ...


class _HeadTooLarge(Exception):
    """Raised inside a parser callback; llhttp then stops and reports an error."""


class UpstreamResponse:
    """One request's answer as it arrives: `status`, `reason`, `headers` (in order, as sent)
    once `send` returns, then the body through `read` or `next_chunk`. `release` must follow
    (`async with` does it): it returns the connection to the pool or closes it."""

    def __init__(self, connection: _Connection, method: str) -> None:
        self._connection = connection
        self._head_request = method == "HEAD"
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.content_length: int | None = None
        self.request_sent = False
        self.nothing_received = True
        self._reason = b""
        self._head_bytes = 0
        self._quiet_bytes = 0  # bytes fed since the body last moved: a head, or trailers
        self._body_moved = False
        self._head_done = False
        self._complete = False
        self._until_close = False
        self._reusable = False
        self._released = False
        self._body: list[bytes] = []
        self._buffered = 0
        self._paused = False
        # The application's failure, or the client's (its body: ClientTooSlow, say).
        self._error: GatewayError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.sender: asyncio.Task[None] | None = None

    # The parser's callbacks (httptools calls them by name).

    def on_message_begin(self) -> None:
        if self._complete:  # a second answer to one request: the framing is in doubt
            self._reusable = False

    def on_status(self, status: bytes) -> None:
        if not self._head_done:
            self._reason += status
            self._count(len(status))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_done:
            return  # trailer fields are not passed on
        self._count(len(name) + len(value))
        if len(self.headers) >= MAX_HEAD_FIELDS:
            raise _HeadTooLarge
        self.headers.append(
            (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        )

    def on_headers_complete(self) -> None:
        if self._head_done:
            return
        status = self._parser.get_status_code()
        if status < 200:  # 100 Continue, 103 Early Hints: the real answer follows
            self.headers, self._reason = [], b""
            return
        self._head_done = True
        self.status = status
        self.reason = self._reason.decode("utf-8", "surrogateescape").strip()
        self._reusable = self._parser.should_keep_alive()
        chunked = False
        for name, value in self.headers:
            lower = name.lower()
            if lower == "content-length":
                self.content_length = int(value)  # llhttp has checked it is one number
            elif lower == "transfer-encoding":
                chunked = value.rpartition(",")[2].strip().lower() == "chunked"
        if self._head_request or status in (204, 304):
            self._complete = True  # llhttp waits for a HEAD answer's body; there is none
            if self._head_request or chunked or self.content_length:
                # The application may still send the body it announced (a HEAD answered like a
                # GET, a 304 with a length): bytes that would read as the next user's answer.
                self._reusable = False
        elif self.content_length is None and not chunked:
            self._until_close = True  # the body ends when the connection does
            self._reusable = False
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self._complete:  # bytes after a HEAD answer or after the end: not reusable
            self._reusable = False
            return
        self._body.append(body)
        self._buffered += len(body)
        self._body_moved = True
        if self._buffered > BUFFER_BYTES and not self._paused:
            self._paused = True
            self._connection.pause_reading()

    def on_message_complete(self) -> None:
        if self._head_done:
            self._complete = True

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            raise _HeadTooLarge

    # Events from the connection.

    def feed(self, data: bytes) -> None:
        self.nothing_received = False
        self._body_moved = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamUnavailable("the application switched protocols unasked"))
        except httptools.HttpParserError as exc:
            if self._complete:
                self._reusable = False  # stray bytes after a complete answer
            elif isinstance(exc.__context__, _HeadTooLarge):  # raised in our callback
                self._fail(UpstreamUnavailable(_HEAD_TOO_LARGE))
            else:  # llhttp's reason names what was wrong, never the bytes themselves
                self._fail(
                    UpstreamUnavailable(f"the application's answer could not be read: {exc}")
                )
        if not self._complete:
            # httptools gathers a header field whole before it calls on_header: without this
            # bound, one endless header (or trailer) line would be held in memory entire.
            self._quiet_bytes = 0 if self._body_moved else self._quiet_bytes + len(data)
            if self._quiet_bytes > MAX_HEAD_BYTES:
                self._fail(UpstreamUnavailable(_HEAD_TOO_LARGE))
        self._wake()

    def ended(self, exc: BaseException | None) -> None:
        """The connection closed (by the application, or because of `exc`)."""
        self._reusable = False
        if self._head_done and self._until_close and self._error is None and exc is None:
            self._complete = True  # a clean close ends such a body; a reset cuts it short
        elif not self._complete:
            message = _UNREACHABLE if not self._head_done else _CUT_SHORT
            self._fail(UpstreamUnavailable(message))
        self._wake()

    def _fail(self, error: GatewayError) -> None:
        if self._error is None:
            self._error = error
        self._reusable = False
        self._connection.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        """Until something arrives, or `read_timeout` passes with nothing arriving."""
        connection = self._connection
        loop = connection.loop
        waiter = self._waiter = loop.create_future()
        timeout = connection.read_timeout
        self._timer = loop.call_at(connection.last_data + timeout, self._silence_check, timeout)
        try:
            await waiter
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._waiter = None

    def _silence_check(self, timeout: float) -> None:
        connection = self._connection
        silent_until = connection.last_data + timeout
        if connection.loop.time() < silent_until:  # bytes moved meanwhile: wait on
            self._timer = connection.loop.call_at(silent_until, self._silence_check, timeout)
            return
        self._timer = None
        self._fail(UpstreamTimeout(_TOO_SLOW))
        self._wake()

    # What the caller uses.

    async def wait_head(self) -> None:
        while not self._head_done:
            if self._error is not None:
                raise self._error
            await self._wait()

    async def read(self) -> bytes:
        """The whole body (the caller has checked that it is small)."""
        while not self._complete:
            if isinstance(self._error, UpstreamTimeout):
                raise self._error
            if self._error is not None:
                raise UpstreamUnavailable(_CUT_SHORT) from self._error
            await self._wait()
        body = b"".join(self._body)
        self._body, self._buffered = [], 0
        return body

    async def next_chunk(self) -> bytes:
        """The body bytes that have arrived since the last call (waiting for some); b"" at the
        end of the body."""
        while True:
            if self._body:
                chunks = self._body
                self._body, self._buffered = [], 0
                if self._paused:
                    self._paused = False
                    self._connection.resume_reading()
                    # The pause was the caller's: the application's silence counts from now.
                    self._connection.last_data = self._connection.loop.time()
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if self._error is not None:
                raise self._error
            if self._complete:
                return b""
            await self._wait()

    def release(self) -> None:
        """Back to the pool if the exchange ended cleanly, else the connection is closed."""
        if self._released:
            return
        self._released = True
        # The parser holds this object's callbacks: dropping it here ends the reference cycle
        # at once, instead of leaving one per request to the cyclic garbage collector.
        del self._parser
        sender = self.sender
        if sender is not None and not sender.done():
            sender.cancel()
        connection = self._connection
        if self._complete and self._reusable and self.request_sent and self._error is None:
            if self._paused:  # the answer ended while its reader held back: read on for the next
                connection.resume_reading()
            connection.finished()
        else:
            connection.close()

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.release()


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection to the upstream, serving one request at a time."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.read_timeout = pool.read_timeout
        self.transport: asyncio.Transport | None = None
        self.exchange: UpstreamResponse | None = None
        self.closed = False
        self.counted = False  # against the pool's limit, once connected
        self.reused = False
        self.idle_since = 0.0
        self.last_data = 0.0
        self._writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self.last_data = self.loop.time()
        exchange = self.exchange
        if exchange is None:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        exchange.feed(data)

    def eof_received(self) -> bool:
        if self.exchange is not None:
            self.exchange.ended(None)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.ended(exc)
        self.resume_writing()  # a waiting writer wakes and finds the connection closed
        self.pool.forget(self)

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = self.loop.create_future()

    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    async def drain(self) -> None:
        if self._writable is not None:
            await self._writable
        if self.closed:
            raise ConnectionResetError("the upstream connection closed")

    def start(self, method: str) -> UpstreamResponse:
        exchange = self.exchange = UpstreamResponse(self, method)
        self.last_data = self.loop.time()
        return exchange

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def writelines(self, data: tuple[bytes, ...]) -> None:
        assert self.transport is not None
        self.transport.writelines(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def finished(self) -> None:
        self.exchange = None
        self.reused = True
        self.pool.put_back(self)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()  # nothing of ours is worth flushing on a doubtful connection


def _closing(connection: _Connection) -> bool:
    return connection.transport is None or connection.transport.is_closing()


class UpstreamPool:
    """Keep-alive connections to one upstream origin, at most `limit` open at once; a request
    beyond that waits for one."""

    def __init__(
        self,
        base: URL,
        *,
        connect_timeout: float,
        read_timeout: float,
        limit: int,
        ssl_context: ssl.SSLContext | None = None,
        idle_seconds: float = IDLE_SECONDS,
        open_gauge: Gauge | None = None,
        waits: Counter | None = None,
        slot_wait: float = math.inf,
    ) -> None:
        if base.scheme not in ("http", "https") or not base.raw_host:
            raise ValueError(f"not an http(s) origin: {base}")
        self.loop = asyncio.get_running_loop()
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self._host = base.raw_host
        self._port = base.port or (443 if base.scheme == "https" else 80)
        https = base.scheme == "https"
        self._ssl = (ssl_context or ssl.create_default_context()) if https else None
        # The Host header when the caller gives none: the origin's, without a default port.
        self.host_header = base.host_port_subcomponent or self._host
        self._limit = limit
        self._slot_wait = slot_wait
        self._idle_seconds = idle_seconds
        self._open_gauge = open_gauge
        self._waits = waits
        self._open = 0
        self._idle: list[_Connection] = []
        # A waiter's future gets a connection handed over, or None for a free slot.
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    def head(self, method: str, target: str, headers: CIMultiDict[str], *, chunked: bool) -> bytes:
        """The request head, refusing any line a header could have split."""
        lines = [f"{method} {target} HTTP/1.1"]
        if "Host" not in headers:
            lines.append(f"Host: {self.host_header}")
        lines.extend(map(": ".join, headers.items()))
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        elif method not in BODYLESS and "Content-Length" not in headers:
            lines.append("Content-Length: 0")
        text = "\r\n".join(lines)
        breaks = len(lines) - 1
        if text.count("\n") != breaks or text.count("\r") != breaks or "\0" in text:
            raise UpstreamUnavailable("a header for the application holds a line break")
        return (text + "\r\n\r\n").encode("utf-8", "surrogateescape")

    async def send(
        self, method: str, target: str, headers: CIMultiDict[str], body: BodySource | None
    ) -> UpstreamResponse:
        """Send the request (streaming `body`, if any) and wait for the answer's head."""
        chunked = body is not None and "Content-Length" not in headers
        head = self.head(method, target, headers, chunked=chunked)
        length = None if chunked or body is None else int(headers["Content-Length"])
        retry = body is None and method in IDEMPOTENT
        idle_after = -math.inf
        while True:
            connection = await self._acquire(idle_after)
            reused, idle_since = connection.reused, connection.idle_since
            exchange = connection.start(method)
            try:
                connection.write(head)
                if body is None:
                    exchange.request_sent = True
                else:
                    exchange.sender = self.loop.create_task(
                        _send_body(connection, exchange, body, length)
                    )
                await exchange.wait_head()
            except UpstreamUnavailable:
                exchange.release()
                if retry and reused and exchange.nothing_received:
                    # Once, and not on a connection idle as long as this one: the application's
                    # idle timeout has likely closed those too.
                    retry, idle_after = False, idle_since
                    continue
                raise
            except BaseException:
                exchange.release()
                raise
            return exchange

    async def _acquire(self, idle_after: float = -math.inf) -> _Connection:
        """A connection: the one idle least long (if it went idle after `idle_after`), else a
        new one, else the first to come free, in the order the callers asked."""
        woken = False
        deadline: float | None = None
        while True:
            if self._closed:
                raise UpstreamUnavailable("the gateway is shutting down")
            oldest = self.loop.time() - self._idle_seconds
            while self._idle:
                connection = self._idle.pop()
                if (
                    connection.idle_since > max(oldest, idle_after)
                    and not connection.closed
                    and not _closing(connection)  # the application's EOF is in
                ):
                    return connection
                connection.close()
            if self._open < self._limit:
                return await self._connect()
            waiter: asyncio.Future[_Connection | None] = self.loop.create_future()
            if not woken and self._waits is not None:
                self._waits.inc()
            if woken:  # a free slot, but another caller was quicker: first in line again
                self._waiters.appendleft(waiter)
            else:
                self._waiters.append(waiter)
            if deadline is None and self._slot_wait < math.inf:
                deadline = self.loop.time() + self._slot_wait  # for the whole wait, not each turn
            try:
                async with asyncio.timeout_at(deadline):
                    handed = await waiter
            except BaseException as exc:
                if waiter.done() and not waiter.cancelled():
                    # Woken but leaving: the turn passes on, never lost.
                    handed = waiter.result()
                    if handed is None:
                        self._wake_one()
                    else:
                        self.put_back(handed)
                if isinstance(exc, TimeoutError):
                    raise UpstreamBusy(
                        "every connection to the application is in use; try again shortly"
                    ) from exc
                raise
            finally:
                if not waiter.done() or waiter.cancelled():
                    # Left the line unserved (a timeout, a cancellation): out of it. A served
                    # waiter was taken off by put_back or _wake_one already, and searching a
                    # line of hundreds for it on every handover would cost more than the wait.
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
            if handed is not None:
                if not handed.closed and not _closing(handed):
                    return handed
                handed.close()
            woken = True

    async def _connect(self) -> _Connection:
        self._open += 1
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await self.loop.create_connection(
                    lambda: _Connection(self),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                )
        except TimeoutError as exc:
            self._lost_one()
            raise UpstreamTimeout(_TOO_SLOW) from exc
        except OSError as exc:
            self._lost_one()
            raise UpstreamUnavailable(_UNREACHABLE) from exc
        except BaseException:
            self._lost_one()
            raise
        if connection.closed:  # lost between connecting and now (forget() did not count it)
            self._lost_one()
            raise UpstreamUnavailable(_UNREACHABLE)
        connection.counted = True
        if self._open_gauge is not None:
            self._open_gauge.inc()
        return connection

    def put_back(self, connection: _Connection) -> None:
        if self._closed:
            connection.close()
            return
        connection.idle_since = self.loop.time()
        while self._waiters:  # handed to the first in line, so no later caller can take it
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        self._idle.append(connection)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._idle_seconds, self._sweep)

    def forget(self, connection: _Connection) -> None:
        """A connection closed (idle or in use): it no longer counts against the limit."""
        with contextlib.suppress(ValueError):
            self._idle.remove(connection)
        if connection.counted:
            connection.counted = False
            if self._open_gauge is not None:
                self._open_gauge.dec()
            self._lost_one()

    def _lost_one(self) -> None:
        self._open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _sweep(self) -> None:
        """Close connections idle for `idle_seconds`; look again while any are idle."""
        self._sweeper = None
        now, limit = self.loop.time(), self._idle_seconds
        for connection in [c for c in self._idle if now - c.idle_since >= limit]:
            connection.close()
        if self._idle:
            self._sweeper = self.loop.call_later(limit / 2, self._sweep)

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for connection in list(self._idle):
            connection.close()
        self._idle.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        # Let the transports deliver connection_lost before the loop goes away.
        await asyncio.sleep(0)


async def _send_body(
    connection: _Connection, exchange: UpstreamResponse, body: BodySource, length: int | None
) -> None:
    """Stream the client's body to the application: `length` bytes exactly, or chunked when it
    is None. On any failure the connection closes, and the exchange fails with it (unless its
    answer is complete already)."""
    try:
        left = length
        while chunk := await body.readany():
            if left is None:  # on uvloop the chunk is not copied into a framed one
                connection.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                left -= len(chunk)
                if left < 0:  # never more than announced: the rest would read as a request
                    raise ValueError("the request body is longer than its Content-Length")
                connection.write(chunk)
            connection.last_data = connection.loop.time()  # a sending side is not silent
            await connection.drain()
        if left is None:
            connection.write(b"0\r\n\r\n")
        elif left > 0:
            raise ValueError("the request body ended before its Content-Length")
        exchange.request_sent = True
    except asyncio.CancelledError:
        connection.close()
        raise
    except GatewayError as error:  # the body source refused the client (too slow, say)
        exchange._fail(error)
    except Exception:  # the client's body broke off, or the application closed
        connection.close()
