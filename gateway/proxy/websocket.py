"""Relaying a WebSocket: the upstream socket is opened first (through aiohttp's client), then the
client's is accepted with the same subprotocol, and messages pass both ways until either side
closes or the gateway ends the socket.

The gateway ends a socket (both sides, with the same code) when
- its lease ends (auth/sockets.py): the session it belongs to ended (sign-out on any replica,
  revocation, front-channel logout, idle or absolute expiry) or an API client's token expired:
  1008, policy violation; or its session cannot be checked: 1013;
- no message passed either way for GATEWAY_PROXY__WEBSOCKET_IDLE_TIMEOUT_SECONDS: 1001;
- a message is larger than GATEWAY_PROXY__WEBSOCKET_MAX_MESSAGE_BYTES: 1009, logged as a warning
  (aiohttp refuses it as soon as a frame header or the fragments so far say so);
- an end stops answering pings (GATEWAY_PROXY__WEBSOCKET_HEARTBEAT_SECONDS): the other end
  gets 1011.

Failures before the client's socket is accepted are UpstreamUnavailable / UpstreamTimeout
(aiohttp's errors are translated here); the application must accept within
GATEWAY_PROXY__WEBSOCKET_OPEN_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import aiohttp
from aiohttp import ClientSession, WSCloseCode, WSMsgType, web
from multidict import CIMultiDict
from prometheus_client import Gauge
from yarl import URL

from gateway.auth.sockets import Ending, SocketLease
from gateway.config.advanced import ProxySettings
from gateway.errors import UpstreamTimeout, UpstreamUnavailable
from gateway.proxy.forward import HeadInspector, upstream_target
from gateway.telemetry.metrics import Timing

log = logging.getLogger(__name__)

_NOT_SENDABLE: Final = frozenset({1005, 1006, 1015})
_REQUEST_ID: Final = "X-Request-Id"
_WS_HANDSHAKE: Final = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
IDLE: Final = Ending(WSCloseCode.GOING_AWAY, "idle timeout", "idle")

Socket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


@contextmanager
def _translated(unavailable: str) -> Iterator[None]:
    """aiohttp client failures before the response starts, as the gateway's errors."""
    try:
        yield
    except TimeoutError as exc:
        raise UpstreamTimeout("the application did not accept the WebSocket in time") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamUnavailable(unavailable) from exc


def upstream_url(base: URL, request: web.Request, strip: str = "") -> URL:
    """The upstream URL for this request: the upstream's origin plus the request's raw path and
    query, byte for byte (never the absolute URL a client may put on the request line), without
    the public path prefix when it is stripped."""
    # Concatenate rather than URL.join: a path like "//evil.com/x" must stay a path.
    return URL(str(base).rstrip("/") + upstream_target(request, strip), encoded=True)


def is_websocket(request: web.Request) -> bool:
    return (
        request.method == "GET"
        and request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )


async def forward_websocket(
    request: web.Request,
    headers: CIMultiDict[str],
    *,
    client: ClientSession,
    base: URL,
    limits: ProxySettings,
    strip: str = "",
    lease: SocketLease | None = None,
    own_cookies: frozenset[str] = frozenset(),
    inspect_head: HeadInspector | None = None,
    timing: Timing | None = None,
    open_websockets: set[web.WebSocketResponse] | None = None,
    open_gauge: Gauge | None = None,
) -> web.StreamResponse:
    """Open the upstream WebSocket first, then accept the client's with the same subprotocol, and
    relay messages both ways until either side closes, or the lease or the idle timeout ends it."""
    protocols = tuple(
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    )
    for name in list(headers):
        if name.lower() in _WS_HANDSHAKE:
            del headers[name]
    heartbeat = limits.websocket_heartbeat_seconds or None
    # aiohttp refuses a message of max_msg_size bytes itself: the setting names the largest one.
    max_msg_size = limits.websocket_max_message_bytes + 1
    if timing is not None:
        timing.upstream_sent()
    try:
        with _translated("the application refused the WebSocket"):
            # Waiting for a connection slot, connecting and the handshake: one deadline.
            async with asyncio.timeout(limits.websocket_open_timeout_seconds):
                upstream = await client.ws_connect(
                    upstream_url(base, request, strip).with_scheme(
                        "ws" if base.scheme == "http" else "wss"
                    ),
                    headers=headers,
                    protocols=protocols,
                    autoping=True,
                    heartbeat=heartbeat,
                    max_msg_size=max_msg_size,
                )
    except UpstreamUnavailable as error:
        refusal = error.__cause__
        if isinstance(refusal, aiohttp.WSServerHandshakeError) and 400 <= refusal.status < 500:
            # The application said no (401/403/404...): say the same, with no body of ours.
            return web.Response(status=refusal.status)
        raise
    if timing is not None:
        timing.upstream_answered()
    request_id = headers.get(_REQUEST_ID)
    # Sent: not kept for the socket's life (identity headers, a bearer token: a few KB).
    headers.clear()
    downstream = web.WebSocketResponse(
        protocols=(upstream.protocol,) if upstream.protocol else (),
        autoping=True,
        heartbeat=heartbeat,
        max_msg_size=max_msg_size,
    )
    if request_id is not None:
        downstream.headers[_REQUEST_ID] = request_id
    try:
        await downstream.prepare(request)
    except BaseException:
        await upstream.close(code=WSCloseCode.GOING_AWAY)
        raise
    if open_websockets is not None:  # so that shutdown can close it properly
        open_websockets.add(downstream)
    if open_gauge is not None:
        open_gauge.inc()
    try:
        async with upstream:
            relay = _Relay(request, limits, lease)
            ending = await relay.run(downstream, upstream)
            if ending is not None:
                await upstream.close(code=ending.code, message=ending.reason.encode())
        if not downstream.closed:
            if ending is not None:
                await downstream.close(code=ending.code, message=ending.reason.encode())
            else:
                await downstream.close()
    finally:
        if open_websockets is not None:
            open_websockets.discard(downstream)
        if open_gauge is not None:
            open_gauge.dec()
    return downstream


class _Relay:
    """Both directions of one WebSocket, the time of its last message, and what ends it."""

    def __init__(
        self, request: web.Request, limits: ProxySettings, lease: SocketLease | None
    ) -> None:
        self._request = request
        self._limit = limits.websocket_max_message_bytes
        self._idle = limits.websocket_idle_timeout_seconds
        self._lease = lease
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()

    async def run(
        self, downstream: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse
    ) -> Ending | None:
        """Relay until one side closes (None: it closed the other already) or the gateway ends
        the socket (the Ending, both sides still to be closed)."""
        tasks = [
            asyncio.create_task(self._pass(downstream, upstream, "client")),
            asyncio.create_task(self._pass(upstream, downstream, "application")),
        ]
        waits: set[asyncio.Future[Any]] = set(tasks)
        lease = self._lease
        if lease is not None:
            waits.add(lease.ended)
        try:
            while True:
                timeout = None
                if self._idle:
                    timeout = max(0.0, self._last + self._idle - self._loop.time())
                done, _ = await asyncio.wait(
                    waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if lease is not None and lease.ended.done():
                    return lease.ended.result()
                if done:
                    return None
                if self._loop.time() - self._last >= self._idle:
                    log.info("closing a WebSocket idle for %.0fs", self._idle)
                    return IDLE
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _pass(self, source: Socket, sink: Socket, origin: str) -> None:
        lease = self._lease
        code: int | None = None
        async for message in source:
            if message.type == WSMsgType.TEXT:
                await sink.send_str(message.data)
            elif message.type == WSMsgType.BINARY:
                await sink.send_bytes(message.data)
            else:
                if isinstance(message.data, aiohttp.WebSocketError):
                    code = message.data.code  # the protocol error, for the other end too
                    if code == WSCloseCode.MESSAGE_TOO_BIG:
                        log.warning(
                            "a WebSocket message from the %s on %s exceeded "
                            "GATEWAY_PROXY__WEBSOCKET_MAX_MESSAGE_BYTES (%d); closed with 1009",
                            origin,
                            self._request.path,
                            self._limit,
                        )
                break
            self._last = self._loop.time()
            if lease is not None:
                lease.touch()
        if not sink.closed:
            code = code or source.close_code or WSCloseCode.OK
            if code in _NOT_SENDABLE:
                # 1005/1006/1015 describe a connection, they may not travel in a close frame.
                code = WSCloseCode.INTERNAL_ERROR
            await sink.close(code=code)
