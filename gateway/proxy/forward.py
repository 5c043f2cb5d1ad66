"""Streaming requests to the upstream and responses back: HTTP through the gateway's own
keep-alive pool (upstream/client.py), WebSockets through aiohttp's client.

Bodies are not buffered: request bytes flow from the client's stream into the upstream request,
response bytes are written as they arrive, so memory does not grow with body size. The exception
is an answer of known length up to 64 KiB, which is read whole and sent in one write with its
headers (one system call instead of two on the most common response). Failures before the answer
starts are UpstreamUnavailable / UpstreamTimeout (aiohttp's WebSocket errors are translated here).
Once the response has started streaming, a failure can only abort the connection; it is logged,
not rendered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Final

import aiohttp
from aiohttp import ClientSession, WSMsgType, web
from multidict import CIMultiDict
from prometheus_client import Gauge
from yarl import URL

from gateway.auth.headers import response_headers
from gateway.errors import UpstreamTimeout, UpstreamUnavailable
from gateway.keys import CLIENT_GONE
from gateway.telemetry.metrics import Timing
from gateway.upstream.client import BodySource, UpstreamPool
from gateway.upstream.pacing import Pace, PacedBody, PacedWriter

log = logging.getLogger(__name__)

# Sees an answer's status and headers before the client does; raises to abandon the answer.
HeadInspector = Callable[[int, Sequence[tuple[str, str]]], Awaitable[None]]

_NO_BODY_STATUSES: Final = frozenset({204, 304})
_NOT_SENDABLE: Final = frozenset({1005, 1006, 1015})
WS_MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
BUFFERED_BODY_BYTES: Final = 64 * 1024
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


@contextmanager
def _translated(unavailable: str) -> Iterator[None]:
    """aiohttp client failures before the response starts, as the gateway's errors."""
    try:
        yield
    except TimeoutError as exc:
        raise UpstreamTimeout("the application did not answer in time") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamUnavailable(unavailable) from exc


def upstream_url(base: URL, request: web.Request) -> URL:
    """The upstream URL for this request: the upstream's origin plus the request's raw path and
    query, byte for byte (never the absolute URL a client may put on the request line)."""
    # Concatenate rather than URL.join: a path like "//evil.com/x" must stay a path.
    return URL(str(base).rstrip("/") + request.rel_url.raw_path_qs, encoded=True)


def is_websocket(request: web.Request) -> bool:
    return (
        request.method == "GET"
        and request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )


async def forward(
    request: web.Request,
    headers: CIMultiDict[str],
    *,
    pool: UpstreamPool,
    prefix: str = "",
    own_cookies: frozenset[str] = frozenset(),
    inspect_head: HeadInspector | None = None,
    timing: Timing | None = None,
    pace: Pace | None = None,
) -> web.StreamResponse:
    """Send the request upstream and stream the answer back; redirects are passed through.

    The upstream's target is `prefix` (the path of GATEWAY_UPSTREAM) plus the request's raw path
    and query, byte for byte (never the absolute URL a client may put on the request line).

    `inspect_head` sees the answer's status and headers before anything reaches the client; an
    exception it raises abandons the answer and propagates (the caller may send the request
    again: a claims challenge)."""
    body: BodySource | None = request.content if request.body_exists else None
    if body is not None and pace is not None:
        body = PacedBody(body, pace)
    if timing is not None:
        timing.upstream_sent()
    waiting = asyncio.current_task()
    if waiting is not None:
        # A client that leaves abandons its request at the application (the connection to it
        # closes), instead of holding a connection slot until the application is done.
        request[CLIENT_GONE] = waiting.cancel
    try:
        upstream = await pool.send(
            request.method, prefix + request.rel_url.raw_path_qs, headers, body
        )
    except asyncio.CancelledError:
        if waiting is not None and (request.transport is None or request.transport.is_closing()):
            # Our own cancellation (the client left): the caller sees a client that went away
            # (499), and the task is not left marked as cancelled.
            waiting.uncancel()
            raise ConnectionResetError("the client went away") from None
        raise
    finally:
        request.pop(CLIENT_GONE, None)
    if timing is not None:
        timing.upstream_answered()
    async with upstream:
        if inspect_head is not None:
            await inspect_head(upstream.status, upstream.headers)
        kept = response_headers(upstream.headers, own_cookies=own_cookies)
        if _REQUEST_ID in headers:  # answers name the request id the upstream was given
            kept.setdefault(_REQUEST_ID, headers[_REQUEST_ID])
        status, reason, length = upstream.status, upstream.reason, upstream.content_length
        no_body = status in _NO_BODY_STATUSES or request.method == "HEAD"
        if not no_body and length is not None and length <= BUFFERED_BODY_BYTES:
            # A small answer of known size is read whole and sent with its headers in one write,
            # as nginx's proxy buffers do; a failure while reading it can still be a clean 502.
            whole = await upstream.read()
            return web.Response(status=status, reason=reason, headers=kept, body=whole)
        response = web.StreamResponse(status=status, reason=reason, headers=kept)
        if no_body:
            await response.prepare(request)
            await response.write_eof()
            return response
        if length is not None:
            response.content_length = length
        await response.prepare(request)
        writer = PacedWriter(response, pace) if pace is not None else None
        try:
            while chunk := await upstream.next_chunk():
                if writer is None:
                    await response.write(chunk)
                else:
                    await writer.write(chunk)
        except TimeoutError:
            # The client reads too slowly (pacing.py); its slot is needed by others.
            log.info("client read %s %s too slowly; cut off", request.method, request.path)
            _reset(request)
            return response
        except (UpstreamUnavailable, UpstreamTimeout):
            # Headers are gone already: the only honest signal left is an aborted connection.
            if request.transport is None or request.transport.is_closing():
                log.debug("client went away while streaming %s %s", request.method, request.path)
            else:
                log.warning("upstream failed while streaming %s %s", request.method, request.path)
                request.transport.abort()
            return response
        await response.write_eof()
        return response


def _reset(request: web.Request) -> None:
    """End the client's connection with a reset: a plain close would still trickle what the
    kernel holds for it (megabytes) to a client that reads nothing."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def forward_websocket(
    request: web.Request,
    headers: CIMultiDict[str],
    *,
    client: ClientSession,
    base: URL,
    own_cookies: frozenset[str] = frozenset(),
    inspect_head: HeadInspector | None = None,
    timing: Timing | None = None,
    open_websockets: set[web.WebSocketResponse] | None = None,
    open_gauge: Gauge | None = None,
) -> web.StreamResponse:
    """Open the upstream WebSocket first, then accept the client's with the same subprotocol, and
    relay messages both ways until either side closes."""
    protocols = tuple(
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    )
    for name in list(headers):
        if name.lower() in _WS_HANDSHAKE:
            del headers[name]
    if timing is not None:
        timing.upstream_sent()
    try:
        with _translated("the application refused the WebSocket"):
            upstream = await client.ws_connect(
                upstream_url(base, request).with_scheme("ws" if base.scheme == "http" else "wss"),
                headers=headers,
                protocols=protocols,
                autoping=True,
                max_msg_size=WS_MAX_MESSAGE_BYTES,
            )
    except UpstreamUnavailable as error:
        refusal = error.__cause__
        if isinstance(refusal, aiohttp.WSServerHandshakeError) and 400 <= refusal.status < 500:
            # The application said no (401/403/404...): say the same, with no body of ours.
            return web.Response(status=refusal.status)
        raise
    if timing is not None:
        timing.upstream_answered()
    downstream = web.WebSocketResponse(
        protocols=(upstream.protocol,) if upstream.protocol else (),
        autoping=True,
        max_msg_size=WS_MAX_MESSAGE_BYTES,
    )
    if _REQUEST_ID in headers:
        downstream.headers[_REQUEST_ID] = headers[_REQUEST_ID]
    await downstream.prepare(request)
    if open_websockets is not None:  # so that shutdown can close it properly
        open_websockets.add(downstream)
    if open_gauge is not None:
        open_gauge.inc()

    async def relay(
        source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    ) -> None:
        async for message in source:
            if message.type == WSMsgType.TEXT:
                await sink.send_str(message.data)
            elif message.type == WSMsgType.BINARY:
                await sink.send_bytes(message.data)
            else:
                break
        if not sink.closed:
            code = source.close_code or aiohttp.WSCloseCode.OK
            if code in _NOT_SENDABLE:
                # 1005/1006/1015 describe a connection, they may not travel in a close frame.
                code = aiohttp.WSCloseCode.INTERNAL_ERROR
            await sink.close(code=code)

    try:
        async with upstream:
            tasks = [
                asyncio.create_task(relay(downstream, upstream)),
                asyncio.create_task(relay(upstream, downstream)),
            ]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        if not downstream.closed:
            await downstream.close()
    finally:
        if open_websockets is not None:
            open_websockets.discard(downstream)
        if open_gauge is not None:
            open_gauge.dec()
    return downstream
