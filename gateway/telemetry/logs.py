"""Log lines: one JSON object per line (or plain text for people), each stamped with the request
id of the request it belongs to, and the access log in the same shape.

Nothing here logs a query string, a header value or a body: paths are logged without their
query (a callback's query holds the authorization code), so no token or secret reaches a log.

Writing never blocks the event loop. Records go into a bounded queue and one thread formats and
writes them: when stderr is read slowly or not at all (a stuck log collector, a full pipe), a
synchronous write would freeze every request of the process, as it did in a soak test after 64 KiB
of unread access log. When the queue is full, records are dropped and counted, and a warning says
how many as soon as there is room again.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import logging.handlers
import queue
import sys
import time
from typing import Any, Final

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from gateway.telemetry.metrics import TIMING_KEY

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
# The client (as resolved through trusted proxies) and the signed-in user of the request being
# handled, for the access line and audit lines; set by the request's own task (web/middleware.py
# and the handlers), so a keep-alive connection's next request starts from None again.
client_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("client", default=None)
user_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("user", default=None)
AUDIT_LOGGER: Final = "gateway.audit"
# JSON keys follow the Elastic Common Schema (ECS), which log pipelines (Elastic, OpenSearch,
# Loki and Datadog pipelines) map without configuration: our record attributes -> ECS fields.
ECS_FIELDS: Final = {
    "request_id": "http.request.id",
    "event": "event.action",
    "method": "http.request.method",
    "path": "url.path",
    "status": "http.response.status_code",
    "client": "client.address",
    "user": "user.id",
    "user_agent": "user_agent.original",
    "bytes": "http.response.body.bytes",
    "rule": "rule.name",
    "reason": "event.reason",
}
# Attributes every LogRecord has; anything else on a record was passed as `extra` and is kept.
_STANDARD: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "request_id",
}


class RequestIdFilter(logging.Filter):
    """Stamps each record with its request's id, and audit records with the client address."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        if record.name == AUDIT_LOGGER and not hasattr(record, "client"):
            record.client = client_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One ECS-shaped JSON object per record (see ECS_FIELDS); absent values are left out."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "@timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "log.level": record.levelname.lower(),
            "log.logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["http.request.id"] = request_id
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_") and value is not None:
                entry[ECS_FIELDS.get(name, name)] = value
        if record.exc_info:
            entry["error.stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """For people: time, level, logger, [request id] when there is one, the message."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        line = (
            f"{self.formatTime(record)} {record.levelname} {record.name} "
            + (f"[{request_id}] " if request_id else "")
            + record.getMessage()
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


QUEUED_RECORDS: Final = 10_000


class NonBlockingHandler(logging.handlers.QueueHandler):
    """Hands records to the writer thread; never waits for it."""

    def __init__(self, records: queue.Queue[logging.LogRecord | None]) -> None:
        super().__init__(records)
        self.dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The message is fixed now (its arguments may change later); formatting, the costly
        # part, happens in the writer thread. Exceptions travel as they are, within one process.
        record.msg = record.getMessage()
        record.args = None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            if self.dropped:
                self.queue.put_nowait(self._dropped_notice())
                self.dropped = 0
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def _dropped_notice(self) -> logging.LogRecord:
        notice = logging.LogRecord(
            __name__,
            logging.WARNING,
            __file__,
            0,
            f"{self.dropped} log lines were dropped: stderr is not read fast enough",
            None,
            None,
        )
        notice.request_id = None
        return notice


_listener: logging.handlers.QueueListener | None = None


def configure(format_name: str, level: str = "INFO") -> None:
    """Send every log line to stderr in `format_name` ("json" or "text"), through a writer
    thread (see above)."""
    global _listener
    shutdown()
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(JsonFormatter() if format_name == "json" else TextFormatter())
    records: queue.Queue[logging.LogRecord | None] = queue.Queue(QUEUED_RECORDS)
    handler = NonBlockingHandler(records)
    handler.addFilter(RequestIdFilter())  # here, in the request's own context
    _listener = logging.handlers.QueueListener(records, writer)
    _listener.start()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries' warnings (MSAL's UserWarning about response_mode, say) as log lines like any
    # other, not raw text on stderr.
    logging.captureWarnings(True)


def shutdown() -> None:
    """Write what is queued and stop the writer thread (at exit)."""
    global _listener
    if _listener is not None:
        with contextlib.suppress(queue.Full):  # stderr is not read at all: nothing more to do
            _listener.stop()
        _listener = None


class AccessLogger(AbstractAccessLogger):
    """One line per request: method, path without query, status, duration, request id, the
    client (through trusted proxies), the signed-in user, user agent, body bytes sent and the
    application's share of the time."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        extra: dict[str, Any] = {
            "event": "access",
            "method": request.method,
            "path": request.rel_url.path,
            "status": response.status,
            "duration_ms": round(time * 1000, 2),
            "request_id": response.headers.get("X-Request-Id"),
            "client": client_var.get() or request.remote,
            "user": user_var.get(),
            "user_agent": request.headers.get("User-Agent", "")[:256] or None,
            "bytes": response.body_length,
        }
        timing = request.get(TIMING_KEY)
        if timing is not None and timing.sent is not None and timing.answered is not None:
            extra["upstream_ms"] = round((timing.answered - timing.sent) * 1000, 2)
        self.logger.info(
            "%s %s %s", request.method, request.rel_url.path, response.status, extra=extra
        )
