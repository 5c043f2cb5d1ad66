"""Streaming requests to the upstream and responses back, through the gateway's own keep-alive
pool (upstream/client.py). WebSockets are relayed by proxy/websocket.py.

Bodies are not buffered: request bytes flow from the client's stream into the upstream request,
response bytes are written as they arrive, so memory does not grow with body size. The exception
is an answer of known length up to 64 KiB, which is read whole and sent in one write with its
headers (one system call instead of two on the most common response). Failures before the answer
starts are UpstreamUnavailable / UpstreamTimeout.
Once the response has started streaming, a failure can only abort the connection; it is logged,
not rendered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from aiohttp import web
from multidict import CIMultiDict

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
BUFFERED_BODY_BYTES: Final = 64 * 1024
_REQUEST_ID: Final = "X-Request-Id"


def upstream_target(request: web.Request, strip: str = "") -> str:
    """The request's raw path and query as the upstream receives them: byte for byte, without
    the public path prefix `strip` when the application is served without it (the handler has
    checked that the raw path starts with it)."""
    target = request.rel_url.raw_path_qs
    if not strip:
        return target
    rest = target[len(strip) :]
    return rest if rest.startswith("/") else "/" + rest


async def forward(
    request: web.Request,
    headers: CIMultiDict[str],
    *,
    pool: UpstreamPool,
    prefix: str = "",
    strip: str = "",
    own_cookies: frozenset[str] = frozenset(),
    inspect_head: HeadInspector | None = None,
    timing: Timing | None = None,
    pace: Pace | None = None,
) -> web.StreamResponse:
    """Send the request upstream and stream the answer back; redirects are passed through.

    The upstream's target is `prefix` (the path of GATEWAY_UPSTREAM) plus the request's raw path
    and query, byte for byte (never the absolute URL a client may put on the request line),
    less the public path prefix `strip` when the application is served without it.

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
            request.method, prefix + upstream_target(request, strip), headers, body
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
