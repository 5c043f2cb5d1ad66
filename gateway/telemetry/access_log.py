"""The access log: one line per request, in the log's format (telemetry/logs.py), made cheaply.

A line names the method, the path without its query, the status, the duration, the request id,
the client (as resolved through trusted proxies), the signed-in user, the user agent (its first
256 characters), the body bytes sent and the application's share of the time.

It is written on every request, so it is not made through the logging machinery (a LogRecord, a
dict of extras, a filter, a generic formatter: about 60 µs a line). aiohttp calls `log` once the
response is sent; it reads a few values and fills a template whose fixed parts are made once,
escaping what came from the request (JSON escaping, or printable() in text), and hands the line to
the writer thread, which writes lines in batches. The lines are the same, byte for byte, as the
JSON and text formatters make for a record with the same fields.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Final

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from gateway.telemetry import logs
from gateway.telemetry.log_writer import LineWriter
from gateway.telemetry.metrics import TIMING_KEY

USER_AGENT_CHARS: Final = 256
_now: Final = time.time  # `time` is also the name aiohttp gives the duration

# (created, method, path, status, seconds, request id, client, user, user agent, bytes,
# upstream seconds): every field of one line.
Format = Callable[
    [
        float,
        str,
        str,
        int,
        float,
        str | None,
        str | None,
        str | None,
        str | None,
        int,
        float | None,
    ],
    str,
]


def json_format(logger_name: str) -> Format:
    """Lines as logs.JsonFormatter writes a record carrying the access line's extras. JSON
    escaping works character by character, so escaped parts can be joined: the message is made
    from the escaped method and path."""
    head = f', "log.level": "info", "log.logger": {encode_basestring(logger_name)}, "message": "'

    def line(
        created: float,
        method: str,
        path: str,
        status: int,
        seconds: float,
        request_id: str | None,
        client: str | None,
        user: str | None,
        user_agent: str | None,
        sent: int,
        upstream: float | None,
    ) -> str:
        m, p = encode_basestring(method), encode_basestring(path)
        rid = f', "http.request.id": {encode_basestring(request_id)}' if request_id else ""
        who = f', "client.address": {encode_basestring(client)}' if client is not None else ""
        if user is not None:
            who += f', "user.id": {encode_basestring(user)}'
        if user_agent:
            who += f', "user_agent.original": {encode_basestring(user_agent)}'
        tail = f', "upstream_ms": {round(upstream * 1000, 2)!r}}}' if upstream is not None else "}"
        return (
            f'{{"@timestamp": "{logs.json_stamp(created)}"{head}{m[1:-1]} {p[1:-1]} {status}"'
            f'{rid}, "event.action": "access", "http.request.method": {m}, "url.path": {p}'
            f', "http.response.status_code": {status}'
            f', "duration_ms": {round(seconds * 1000, 2)!r}{who}'
            f', "http.response.body.bytes": {sent}{tail}\n'
        )

    return line


def text_format(logger_name: str) -> Format:
    """Lines as logs.TextFormatter writes them: time, level, logger, [request id], method,
    path, status; what came from the request escaped by logs.printable."""
    head = f" INFO {logger_name} "

    def line(
        created: float,
        method: str,
        path: str,
        status: int,
        seconds: float,
        request_id: str | None,
        client: str | None,
        user: str | None,
        user_agent: str | None,
        sent: int,
        upstream: float | None,
    ) -> str:
        rid = f"[{logs.printable(request_id)}] " if request_id else ""
        return (
            f"{logs.text_stamp(created)}{head}{rid}"
            f"{logs.printable(method)} {logs.printable(path)} {status}\n"
        )

    return line


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access logger (one per connection): see the module docstring. Without a
    configured writer (logs.configure was not called: aiohttp embedded in a test, say) it logs
    a record with the same fields through `logger` instead."""

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        configured = logs.sink()
        self._writer: LineWriter | None = None
        self._line: Format | None = None
        if configured is not None:
            self._writer, name = configured
            make = json_format if name == "json" else text_format
            self._line = make(logger.name)

    @property
    def enabled(self) -> bool:
        # Asked once per connection: at GATEWAY_LOG__LEVEL=WARNING aiohttp skips the log call.
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        timing = request.get(TIMING_KEY)
        upstream = None
        if timing is not None and timing.sent is not None and timing.answered is not None:
            upstream = timing.answered - timing.sent
        user_agent = request.headers.get("User-Agent")
        fields = (
            _now(),
            request.method,
            request.rel_url.path,
            response.status,
            time,
            response.headers.get("X-Request-Id"),
            logs.client_var.get() or request.remote,
            logs.user_var.get(),
            user_agent[:USER_AGENT_CHARS] if user_agent else None,
            response.body_length,
            upstream,
        )
        if self._writer is not None and self._line is not None:
            self._writer.put(self._line(*fields))
        else:
            self._log_record(*fields)

    def _log_record(
        self,
        created: float,
        method: str,
        path: str,
        status: int,
        seconds: float,
        request_id: str | None,
        client: str | None,
        user: str | None,
        user_agent: str | None,
        sent: int,
        upstream: float | None,
    ) -> None:
        extra = {
            "event": "access",
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
            "request_id": request_id,
            "client": client,
            "user": user,
            "user_agent": user_agent,
            "bytes": sent,
        }
        if upstream is not None:
            extra["upstream_ms"] = round(upstream * 1000, 2)
        self.logger.info("%s %s %s", method, path, status, extra=extra)
