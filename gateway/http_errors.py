"""What the gateway says about requests its HTTP parser refuses (bad request lines, malformed
headers, oversized fields): a fixed status text, nothing of the request echoed back, and a log
line naming only the kind of error. aiohttp's default repeats up to ~100 bytes of the raw input,
which can carry markup, terminal escapes or a session cookie (THREATS.md HT-11, LK-01)."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

log = logging.getLogger("gateway.http")


class QuietRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        log.warning(
            "refused a request the HTTP parser could not accept: %s (%d)",
            type(exc).__name__ if exc is not None else "error",
            status,
            extra={"event": "malformed_request", "status": status},
        )
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; closing the connection")
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        response = web.Response(
            status=status,
            text=f"{status} {phrase}\n",
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"},
        )
        response.force_close()
        return response


class QuietServer(Server):
    def __call__(self) -> RequestHandler:
        return QuietRequestHandler(self, loop=self._loop, **self._kwargs)


class QuietAppRunner(web.AppRunner):
    """An AppRunner whose connections answer parser errors with QuietRequestHandler."""

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = QuietServer  # same state, quieter error handling
        return server
