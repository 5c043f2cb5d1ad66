"""Client connections: how long a request head may take, how many connections may be open, and
the file descriptors they need (THREATS.md F-23).

- **Head deadline.** A request head must be complete `header_timeout` seconds after the connection
  opened or, on a kept-alive connection, after the first byte of the next request arrived.
  Otherwise the connection is closed, after a 408 if part of a head had arrived: a client that
  sends one byte every few seconds (slow loris) cannot hold a connection.
- **Idle keep-alive.** Between requests aiohttp's `keepalive_timeout` closes the connection;
  server/serve.py sets it.
- **Cap.** At most `limit` client connections are open. A connection beyond it closes the one
  that has been idle longest (waiting for a request head, with no request in progress), so a
  flood of idle connections cannot lock out anyone else: idle connections serve nobody, and
  clients reopen a closed idle connection by themselves (RFC 9112 9.3.1); nginx reuses its idle
  keep-alive connections the same way when it runs out. Only when every open connection has a
  request in progress is the new one closed at once.
- **File descriptors.** The soft open-file limit is raised to the hard one at start, and the cap
  is lowered to what it leaves after the gateway's other connections.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import OrderedDict
from typing import Any, Final

from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse
from aiohttp.web_server import Server

from gateway.server.refusals import QuietAppRunner, QuietRequestHandler, QuietServer, refusal_bytes
from gateway.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

# Descriptors kept for everything but client connections and the pools server/serve.py counts: the
# listeners, the event loop, log files, identity-provider and Graph HTTP pools.
OTHER_DESCRIPTORS: Final = 64
LIMIT_WARNING_INTERVAL_SECONDS: Final = 60.0


def raise_open_file_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit, as nginx, Go and systemd
    services do: the soft default (often 1024) is a leftover of select(), which asyncio does not
    use. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= soft:  # unlimited (macOS) or nothing to gain
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft
    return hard


def client_connection_limit(wanted: int, open_file_limit: int, reserved: int) -> int:
    """The cap that fits: `wanted`, or fewer when the open-file limit, less `reserved` descriptors
    for upstream and store pools and OTHER_DESCRIPTORS, cannot hold that many."""
    room = max(open_file_limit - reserved - OTHER_DESCRIPTORS, 1)
    if room < wanted:
        log.warning(
            "GATEWAY_PROXY__MAX_CLIENT_CONNECTIONS is %d, but the open-file limit (%d) leaves room "
            "for %d client connections only: the cap is %d",
            wanted,
            open_file_limit,
            room,
            room,
        )
    return min(wanted, room)


class ClientConnections:
    """The open client connections of one server process; the idle ones in the order they became
    idle."""

    def __init__(self, limit: int, metrics: Metrics | None = None) -> None:
        self.limit = limit
        self.metrics = metrics
        self._open: set[BoundedRequestHandler] = set()
        self._idle: OrderedDict[BoundedRequestHandler, None] = OrderedDict()
        self._warned_at: float | None = None

    def opened(self, connection: BoundedRequestHandler) -> bool:
        """Count a new (idle) connection, closing the longest idle ones to stay within the limit.
        False when every other connection is busy: the new one must be closed instead."""
        self._open.add(connection)
        self._idle[connection] = None
        if self.metrics is not None:
            self.metrics.client_connections.inc()
        while len(self._open) > self.limit:
            oldest = next(iter(self._idle))
            self.closed(oldest)
            if oldest is connection:
                self._warn("every connection has a request in progress: refusing new ones")
                self.count_close("refused_at_limit")
                return False
            self._warn("closing the connections idle longest")
            self.count_close("idle_at_limit")
            oldest.force_close()
        return True

    def count_close(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.client_connections_closed.labels(reason).inc()

    def busy(self, connection: BoundedRequestHandler) -> None:
        self._idle.pop(connection, None)

    def idle(self, connection: BoundedRequestHandler) -> None:
        if connection in self._open:
            self._idle[connection] = None
            self._idle.move_to_end(connection)

    def closed(self, connection: BoundedRequestHandler) -> None:
        if connection in self._open:
            self._open.discard(connection)
            if self.metrics is not None:
                self.metrics.client_connections.dec()
        self._idle.pop(connection, None)

    def _warn(self, what: str) -> None:
        # A flood would otherwise write one line per connection.
        now = asyncio.get_running_loop().time()
        if self._warned_at is None or now - self._warned_at >= LIMIT_WARNING_INTERVAL_SECONDS:
            self._warned_at = now
            log.warning(
                "%d client connections open (GATEWAY_PROXY__MAX_CLIENT_CONNECTIONS): %s",
                self.limit,
                what,
                extra={"event": "connection_limit"},
            )


class BoundedRequestHandler(QuietRequestHandler):
    """One client connection, counted in ClientConnections, with a deadline for request heads."""

    def __init__(
        self,
        manager: Server,
        *,
        connections: ClientConnections,
        header_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._connections = connections
        self._header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_started = False  # part of a head arrived since the deadline was set
        self._unanswered = 0  # heads parsed whose response is not finished

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._connections.opened(self):
            self.force_close()
            return
        self._set_deadline(self._loop.time())

    def connection_lost(self, exc: BaseException | None) -> None:
        self._clear_deadline()
        self._connections.closed(self)
        super().connection_lost(exc)

    def _awaiting_head(self) -> bool:
        """No request is in progress and the last one's body is complete: any byte now belongs
        to the next request's head."""
        body = self._last_body
        return self._unanswered == 0 and (body is None or body.is_eof())

    def data_received(self, data: bytes) -> None:
        arrived = self._loop.time()
        awaiting = data != b"" and self._awaiting_head()
        super().data_received(data)  # calls head_parsed() for every head completed
        if awaiting and self._awaiting_head() and self.transport is not None:
            self._head_started = True
            if self._head_timer is None:  # (a fresh connection's runs from its opening)
                self._set_deadline(arrived)

    def head_parsed(self) -> None:
        self._clear_deadline()
        self._unanswered += 1
        self._connections.busy(self)

    async def finish_response(
        self, request: BaseRequest, resp: StreamResponse, start_time: float | None
    ) -> tuple[StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._unanswered = max(self._unanswered - 1, 0)
            if self._unanswered == 0:
                self._connections.idle(self)

    def _set_deadline(self, since: float) -> None:
        self._head_timer = self._loop.call_at(since + self._header_timeout, self._head_overdue)

    def _clear_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._head_started = False

    def _head_overdue(self) -> None:
        self._head_timer = None
        if self.transport is None or not self._awaiting_head():
            return
        if self._head_started:
            log.info(
                "closed a connection whose request head was not complete within %.0fs",
                self._header_timeout,
                extra={"event": "request_head_timeout"},
            )
            self.transport.write(refusal_bytes(408))
        self._connections.count_close("head_timeout")
        self.force_close()


class BoundedServer(QuietServer):
    handler_class = BoundedRequestHandler


class BoundedAppRunner(QuietAppRunner):
    """An AppRunner whose connections are BoundedRequestHandlers; takes `connections` (a
    ClientConnections) and `header_timeout` (seconds) besides AppRunner's own arguments."""

    server_class = BoundedServer
