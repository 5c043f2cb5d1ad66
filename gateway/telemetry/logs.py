"""Log lines: one JSON object per line (or plain text for people), each stamped with the request
id of the request it belongs to; the access log (telemetry/access_log.py) writes the same shapes.

Nothing here logs a query string, a header value or a body: paths are logged without their
query (a callback's query holds the authorization code), so no token or secret reaches a log.
Text lines are for terminals: a control character in a message (a request's path can hold any,
percent-decoded) is written escaped, so a request cannot forge a line or an escape sequence.

Writing never blocks the event loop: every line goes to one writer thread with a bound on what
waits (telemetry/log_writer.py says what happens when stderr is stuck).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any, Final

from gateway.telemetry.log_writer import LineWriter

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


class Stamps:
    """Time stamps of log lines, the second's part made once per second (strftime is the
    costly part of a short line)."""

    def __init__(self, pattern: str, convert: Any) -> None:
        self._pattern = pattern
        self._convert = convert
        self._second = -1
        self._prefix = ""

    def prefix(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            # Two threads may both remake it: each gets a correct value.
            self._prefix = time.strftime(self._pattern, self._convert(second))
            self._second = second
        return self._prefix


def milliseconds(created: float) -> int:
    """The millisecond part of a time stamp, as logging.LogRecord computes it."""
    return int((created - int(created)) * 1000)


_JSON_STAMPS: Final = Stamps("%Y-%m-%dT%H:%M:%S", time.gmtime)
_TEXT_STAMPS: Final = Stamps("%Y-%m-%d %H:%M:%S", time.localtime)


def json_stamp(created: float) -> str:
    """ECS @timestamp: UTC, milliseconds, Z."""
    return f"{_JSON_STAMPS.prefix(created)}.{milliseconds(created):03d}Z"


def text_stamp(created: float) -> str:
    """Local time as logging's default asctime ("2026-12-07 10:00:00,123")."""
    return f"{_TEXT_STAMPS.prefix(created)},{milliseconds(created):03d}"


def printable(text: str) -> str:
    """`text` with every unprintable character (CR, LF, ESC, other controls, line separators)
    written as its Python escape, so that one line stays one harmless line."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


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
            "@timestamp": json_stamp(record.created),
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
            f"{text_stamp(record.created)} {record.levelname} {record.name} "
            + (f"[{printable(request_id)}] " if request_id else "")
            + printable(record.getMessage())
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class LineHandler(logging.Handler):
    """Formats a record where it is logged and hands the line to the writer thread."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.writer.put_now(line + "\n")


_writer: LineWriter | None = None
_format = "json"


def sink() -> tuple[LineWriter, str] | None:
    """The writer of this process and the format name ("json" or "text"), once configured."""
    return None if _writer is None else (_writer, _format)


def configure(format_name: str, level: str = "INFO") -> None:
    """Send every log line to stderr in `format_name` ("json" or "text"), through the writer
    thread (see above)."""
    global _writer, _format
    shutdown()
    formatter = JsonFormatter() if format_name == "json" else TextFormatter()

    def dropped_notice(count: int) -> str:
        notice = logging.LogRecord(
            __name__,
            logging.WARNING,
            __file__,
            0,
            f"{count} log lines were dropped: stderr is not read fast enough",
            None,
            None,
        )
        notice.request_id = None
        return formatter.format(notice) + "\n"

    writer = LineWriter(sys.stderr, dropped_notice)
    writer.start()
    handler = LineHandler(writer)
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdFilter())  # here, in the request's own context
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    _writer, _format = writer, format_name
    # Libraries' warnings (MSAL's UserWarning about response_mode, say) as log lines like any
    # other, not raw text on stderr.
    logging.captureWarnings(True)


def shutdown() -> None:
    """Write what waits and stop the writer thread (at exit)."""
    global _writer
    if _writer is None:
        return
    _writer.stop()
    _writer = None
    # Whatever is logged after this (rarely anything) is written directly, in the same format.
    root = logging.getLogger()
    for index, handler in enumerate(root.handlers):
        if isinstance(handler, LineHandler):
            direct = logging.StreamHandler(sys.stderr)
            direct.setFormatter(handler.formatter)
            direct.filters[:] = handler.filters
            root.handlers[index] = direct
