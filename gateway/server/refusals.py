"""What the gateway says about requests its HTTP parser refuses (bad request lines, malformed
headers, oversized fields, broken chunked framing): a fixed status text, nothing of the request
echoed back, and a log line naming only the kind of error. aiohttp's default repeats up to ~100
bytes of the raw input, which can carry markup, terminal escapes or a session cookie (THREATS.md
HT-11, LK-01).

It also owns the one refusal aiohttp does not deliver by itself: a parser error in the middle of a
request body (a chunk-size line or a trailer line that breaks the rules, THREATS.md HT-07). aiohttp
queues that error behind the request whose body it was parsing, but gives that body neither its
end nor the error, so the request's handler waits for body bytes forever, the queued refusal is
never sent and the connection stays open with nothing answered (issue 5).
"""

from __future__ import annotations

import itertools
import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from aiohttp.web_server import Server

from gateway.keys import CLIENT_GONE

log = logging.getLogger("gateway.http")

_SAFE_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


def _phrase(status: int) -> str:
    return HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"


def refusal_text(status: int) -> str:
    """The whole body of a refusal: the status and its standard phrase, nothing from the input."""
    return f"{status} {_phrase(status)}\n"


def refusal_bytes(status: int) -> bytes:
    """A complete HTTP/1.1 refusal that closes the connection, for writing straight to a transport
    when no response object can be used (no request was framed, or its handler must not answer)."""
    body = refusal_text(status).encode("ascii")
    head = (
        f"HTTP/1.1 {status} {_phrase(status)}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in _SAFE_HEADERS.items())
        + "\r\n"
    )
    return head.encode("ascii") + body


def _log_refusal(kind: str, status: int) -> None:
    log.warning(
        "refused a request the HTTP parser could not accept: %s (%d)",
        kind,
        status,
        extra={"event": "malformed_request", "status": status},
    )


class QuietRequestHandler(RequestHandler):
    def __init__(self, manager: Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        # The body of the last request whose head was parsed: a parser error while it is still
        # incomplete happened inside that body.
        self._last_body: StreamReader | None = None

    def connection_lost(self, exc: BaseException | None) -> None:
        # aiohttp (handler_cancellation off) only fails the request's body stream: a handler
        # waiting on the application would wait to the end. Cancelling every handler instead
        # could stop a token refresh half-written; only the wait on the application asks for it.
        request = self._current_request
        super().connection_lost(exc)
        if request is not None and (on_gone := request.get(CLIENT_GONE)) is not None:
            on_gone()

    def head_parsed(self) -> None:
        """Called once for every request head the parser completed or refused; subclasses track
        connection state with it."""

    def data_received(self, data: bytes) -> None:
        queued = len(self._messages)
        super().data_received(data)
        if len(self._messages) == queued:
            return
        # The parser only appends; start() takes from the left, but never during this call.
        for message, payload in list(itertools.islice(self._messages, queued, None)):
            self.head_parsed()
            if isinstance(message, RawRequestMessage):
                self._last_body = payload
            elif self._last_body is not None and not self._last_body.is_eof():
                self._refuse_inside_body(message, self._last_body)
                return

    def _refuse_inside_body(self, error: _ErrInfo, body: StreamReader) -> None:
        """The parser refused bytes inside `body`: the request it belongs to can never complete,
        and nothing after it on this connection can be framed."""
        pending = [entry for entry in self._messages if entry[1] is body]
        if pending:
            # Not handed to a handler yet: drop it, and the queued refusal is answered in its
            # turn, after any earlier request's response, by handle_error below.
            for entry in pending:
                self._messages.remove(entry)
            self._last_body = None  # the parser's later errors queue behind this one, harmlessly
            return
        _log_refusal(type(error.exc).__name__, error.status)
        request = self._current_request
        if (
            self.transport is not None
            and request is not None
            and request.content is body
            and request.writer.output_size == 0
        ):
            # Its handler is still waiting for the body and has sent nothing: answer in its place.
            # force_close() below takes the transport away before the handler can write, and the
            # lost connection ends the handler's wait for the body.
            self.transport.write(refusal_bytes(error.status))
        # Otherwise its response has begun (or ended): closing is the only honest signal left.
        self.force_close()

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        _log_refusal(type(exc).__name__ if exc is not None else "error", status)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; closing the connection")
        response = web.Response(status=status, text=refusal_text(status), headers=_SAFE_HEADERS)
        response.force_close()
        return response


class QuietServer(Server):
    handler_class: type[QuietRequestHandler] = QuietRequestHandler

    def __call__(self) -> RequestHandler:
        return self.handler_class(self, loop=self._loop, **self._kwargs)


class QuietAppRunner(web.AppRunner):
    """An AppRunner whose connections answer parser errors with QuietRequestHandler, and leave
    request bodies as sent."""

    server_class: type[QuietServer] = QuietServer

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        # aiohttp inflates gzip/deflate/br request bodies by default: the application would get
        # inflated bytes still labelled Content-Encoding: gzip, and an anonymous client a 1000x
        # amplifier. Bodies pass byte for byte; the application decodes what it accepts.
        kwargs.setdefault("auto_decompress", False)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = self.server_class  # same state, quieter error handling
        return server
