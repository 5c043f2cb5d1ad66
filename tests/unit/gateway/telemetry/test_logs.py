"""Log lines (gateway.telemetry.logs, access_log, log_writer): the access line made without the
logging machinery is the line the JSON and text formatters make for the record the access log
used to log, byte for byte; what comes from a request cannot break a line; the writer thread
writes in batches, and with a stuck stderr holds a bounded amount, drops and counts the rest, and
says so once it can write again."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from typing import Any, Final

import pytest

from gateway.telemetry.access_log import json_format, text_format
from gateway.telemetry.log_writer import LineWriter
from gateway.telemetry.logs import JsonFormatter, RequestIdFilter, TextFormatter

ACCESS: Final = "gateway.access"
# created, method, path, status, seconds, request id, client, user, user agent, bytes, upstream
Fields = tuple[
    float, str, str, int, float, str | None, str | None, str | None, str | None, int, float | None
]
CASES: Final[dict[str, Fields]] = {
    "proxied": (
        1_796_000_000.123456,
        "GET",
        "/reports/7",
        200,
        0.004567,
        "4f1c" * 8,
        "203.0.113.7",
        "0b7e2c1d-4a5f-4e3b-8c9d-1e2f3a4b5c6d.72f988bf-86f1-41af-91ab-2d7cd011db47",
        "Mozilla/5.0 (X11; Linux x86_64)",
        100,
        0.00312,
    ),
    "anonymous-no-upstream": (
        1_796_000_001.999,
        "POST",
        "/.auth/login/aad/callback",
        302,
        0.1,
        "a" * 32,
        "::1",
        None,
        None,
        0,
        None,
    ),
    "no-request-id-no-client": (
        1_796_000_002.0005,
        "HEAD",
        "/",
        404,
        0.0,
        None,
        None,
        None,
        "curl/8",
        0,
        None,
    ),
    "hostile-path-and-agent": (
        1_796_000_003.5,
        "GET",
        '/a\r\nINFO forged "line" \\ \x1b[31m\x00\x7f\u2028é中',
        400,
        12.345678,
        "b" * 32,
        "198.51.100.9",
        'us"er\n',
        'agent "quoted" \\ \t\x01 ü',
        31,
        1.0,
    ),
}


def record_as_before(fields: Fields) -> logging.LogRecord:
    """The record the access log logged before it wrote lines itself (the reference)."""
    created, method, path, status, seconds, rid, client, user, agent, sent, upstream = fields
    extra: dict[str, Any] = {
        "event": "access",
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": round(seconds * 1000, 2),
        "request_id": rid,
        "client": client,
        "user": user,
        "user_agent": agent or None,
        "bytes": sent,
    }
    if upstream is not None:
        extra["upstream_ms"] = round(upstream * 1000, 2)
    record = logging.getLogger(ACCESS).makeRecord(
        ACCESS, logging.INFO, __file__, 1, "%s %s %s", (method, path, status), None, extra=extra
    )
    record.created = created
    record.msecs = int((created - int(created)) * 1000) + 0.0
    RequestIdFilter().filter(record)
    return record


@pytest.mark.parametrize("case", CASES)
def test_json_access_line_is_the_formatters_line(case: str) -> None:
    fields = CASES[case]
    expected = JsonFormatter().format(record_as_before(fields)) + "\n"
    assert json_format(ACCESS)(*fields) == expected
    parsed = json.loads(expected)
    assert parsed["url.path"] == fields[2]  # nothing lost to escaping


@pytest.mark.parametrize("case", CASES)
def test_text_access_line_is_the_formatters_line(case: str) -> None:
    fields = CASES[case]
    expected = TextFormatter().format(record_as_before(fields)) + "\n"
    assert text_format(ACCESS)(*fields) == expected


def test_nothing_from_a_request_breaks_a_text_line() -> None:
    line = text_format(ACCESS)(*CASES["hostile-path-and-agent"])
    assert line.count("\n") == 1 and line.endswith("\n")
    assert line[:-1].isprintable()
    assert "\\r\\nINFO forged" in line and "\\x1b[31m" in line and "\\u2028" in line
    assert "é中" in line  # printable text stays as it is


def test_json_lines_hold_no_raw_control_characters() -> None:
    line = json_format(ACCESS)(*CASES["hostile-path-and-agent"])
    assert line.count("\n") == 1
    assert not any(ord(c) < 32 for c in line[:-1])
    parsed = json.loads(line)
    assert parsed["user_agent.original"] == CASES["hostile-path-and-agent"][8]
    assert parsed["user.id"] == 'us"er\n'


class StuckStream(io.StringIO):
    """stderr that nobody reads: a write waits until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.writing = threading.Event()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writing.set()
        self.release.wait(10)
        self.writes += 1
        return super().write(text)


def test_lines_are_written_in_one_batch() -> None:
    stream = StuckStream()
    stream.release.set()
    writer = LineWriter(stream, lambda count: f"{count} dropped\n")
    for index in range(100):
        writer.put(f"line {index}\n")
    writer.write_waiting()
    assert stream.writes == 1
    assert stream.getvalue().splitlines() == [f"line {index}" for index in range(100)]


def test_a_stuck_stream_holds_a_bounded_amount_then_drops_and_counts() -> None:
    stream = StuckStream()
    writer = LineWriter(
        stream, lambda count: f"{count} dropped\n", flush_seconds=0.01, max_waiting_chars=100
    )
    writer.start()
    try:
        writer.put_now("first\n")
        assert stream.writing.wait(5)  # the writer thread is now stuck in its write
        started = time.monotonic()
        for index in range(50):
            writer.put(f"line {index:02d}\n")  # 8 characters each: 12 fit in 100
        assert time.monotonic() - started < 1  # never waits for the stream
        assert writer.dropped == 50 - 12
    finally:
        stream.release.set()
        writer.stop()
    lines = stream.getvalue().splitlines()
    assert lines == ["first"] + [f"line {index:02d}" for index in range(12)] + ["38 dropped"]


def test_stop_gives_up_on_a_stuck_stream() -> None:
    stream = StuckStream()
    writer = LineWriter(stream, lambda count: f"{count} dropped\n", flush_seconds=0.01)
    writer.start()
    writer.put_now("never read\n")
    assert stream.writing.wait(5)
    started = time.monotonic()
    writer.stop(seconds=0.2)
    assert time.monotonic() - started < 2
    stream.release.set()
