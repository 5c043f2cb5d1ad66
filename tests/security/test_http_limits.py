"""Resource limits on requests (THREATS.md A7: HT-07, and F-23's request side): oversized heads,
request targets and trailers are refused quickly and forward nothing, one-byte chunks arrive whole,
and pipelining or huge chunk extensions keep the gateway's memory bounded; raw sockets to a real
gateway process."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Final

import pytest
from support.raw_http import (
    REFUSED,
    exchange,
    get,
    parse_replies,
    split,
    token,
)
from support.served import Served, check_after
from support.upstream import RecordingUpstream

pytestmark = pytest.mark.threat("HT-07")


@dataclass(frozen=True)
class Limit:
    id: str
    pieces: list[bytes]  # {cookie} in the first piece: alice's Cookie line
    allowed: frozenset[int]
    # Seconds between pieces. With a pause the head is handed to a handler, which starts
    # streaming the body upstream, before the bytes the parser refuses arrive (issue 5: aiohttp
    # then left that handler waiting for the rest of the body forever, nothing answered).
    pause: float = 0.0


def _limits() -> list[Limit]:
    big = b"a" * 100_000
    header_line = b"GET /limit HTTP/1.1\r\nHost: app.test\r\n{cookie}X-Big: " + big + b"\r\n\r\n"
    target = b"GET /" + big + b" HTTP/1.1\r\nHost: app.test\r\n{cookie}\r\n"
    many = (
        b"GET /limit HTTP/1.1\r\nHost: app.test\r\n{cookie}"
        + b"".join(b"X-H%d: v\r\n" % i for i in range(10_000))
        + b"\r\n"
    )
    chunked_head = (
        b"POST /limit HTTP/1.1\r\nHost: app.test\r\n{cookie}Transfer-Encoding: chunked\r\n\r\n"
    )
    trailers = b"1\r\nx\r\n0\r\n" + b"".join(b"X-T%d: v\r\n" % i for i in range(10_000)) + b"\r\n"
    long_trailer = b"1\r\nx\r\n0\r\nX-T: " + big + b"\r\n\r\n"
    bad_chunk = b"1\r\nx\r\nzz\r\n"
    limits = [
        Limit("100kB-header-line-in-1kB-segments", split(header_line, 1000), frozenset({400, 431})),
        Limit("100kB-request-target", split(target, 1000), frozenset({400, 414, 431})),
        Limit("10000-header-lines", [many], frozenset({400, 431})),
    ]
    for pause, when in ((0.0, ""), (0.2, "-after-the-head-is-handled")):
        limits += [
            Limit(f"10000-line-trailer-block{when}", [chunked_head, trailers], REFUSED, pause),
            Limit(f"100kB-trailer-line{when}", [chunked_head, long_trailer], REFUSED, pause),
            Limit(f"invalid-chunk-size{when}", [chunked_head, bad_chunk], REFUSED, pause),
        ]
    return limits


LIMITS: Final = _limits()


@pytest.mark.parametrize("case", LIMITS, ids=[case.id for case in LIMITS])
def test_oversized_heads_are_refused_quickly(
    served: Served, recorder: RecordingUpstream, case: Limit
) -> None:
    mark = recorder.mark()
    pieces = [case.pieces[0].replace(b"{cookie}", served.cookie_line), *case.pieces[1:]]
    started = time.monotonic()
    # A generous idle wait: on a busy 2-core machine the refusal can take longer than 0.5 s.
    result = exchange(served.port, pieces, idle=2.0, pause=case.pause)
    assert time.monotonic() - started < 5.0
    statuses = [r.status for r in result.replies]
    assert statuses == [] or (len(statuses) == 1 and statuses[0] in case.allowed), statuses
    assert result.closed
    window = check_after(served, recorder, mark, token())
    assert window == [] or [s.raw_path for s in window] == ["/limit"], window
    if window:  # a trailer refused after the body was streamed: the upstream got a broken body
        assert statuses in ([], [400], [431])


def test_a_broken_body_queued_behind_a_request_is_refused_after_its_answer(
    served: Served, recorder: RecordingUpstream
) -> None:
    """A pipelined request whose body breaks while an earlier request is still being answered:
    the earlier one gets its whole answer, then the refusal, then the connection closes; the
    broken request never reaches the upstream."""
    mark = recorder.mark()
    first = b"GET /_slow?seconds=1 HTTP/1.1\r\nHost: app.test\r\n" + served.cookie_line + b"\r\n"
    broken = (
        b"POST /limit HTTP/1.1\r\nHost: app.test\r\n"
        + served.cookie_line
        + b"Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n"
    )
    result = exchange(served.port, [first + broken, b"zz\r\n"], idle=3.0, pause=0.3)
    assert [r.status for r in result.replies] == [200, 400]
    assert result.replies[0].body == b'{"slow": true}'
    assert result.closed
    assert [s.raw_path for s in check_after(served, recorder, mark, token())] == [
        "/_slow?seconds=1"
    ]


def test_one_byte_chunks_arrive_whole_and_fast(served: Served, recorder: RecordingUpstream) -> None:
    body = os.urandom(10_000)
    chunks = b"".join(b"1\r\n" + body[i : i + 1] + b"\r\n" for i in range(len(body))) + b"0\r\n\r\n"
    head = (
        b"POST /one-byte-chunks HTTP/1.1\r\nHost: app.test\r\n"
        + served.cookie_line
        + b"Transfer-Encoding: chunked\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    started = time.monotonic()
    result = exchange(served.port, [head, *split(chunks, 600)])
    assert time.monotonic() - started < 5.0
    [reply] = result.replies
    assert reply.status == 200
    echoed = reply.echo()
    assert echoed["body_length"] == len(body)
    assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()


@pytest.mark.threat("F-23")
def test_pipelining_and_huge_chunk_extensions_keep_memory_bounded(
    fresh: Served, recorder: RecordingUpstream
) -> None:
    """1,000 pipelined requests on one connection are answered in order (or the connection is
    closed cleanly), and a 10 MB chunk extension is skipped, not kept: the gateway's peak RSS
    grows by far less than the traffic."""
    warm = get(b"/warm-up", cookie=True).replace(b"{cookie}", fresh.cookie_line)
    for _ in range(3):
        assert [r.status for r in exchange(fresh.port, warm).replies] == [200]
    baseline = fresh.process.rss_peak_kib()

    extension = (
        b"POST /extension HTTP/1.1\r\nHost: app.test\r\n"
        + fresh.cookie_line
        + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n1;"
        + b"e" * 10_000_000
        + b"\r\nx\r\n0\r\n\r\n"
    )
    result = exchange(fresh.port, split(extension, 256 * 1024))
    statuses = [r.status for r in result.replies]
    assert statuses in ([200], [400], [413], [431]), statuses
    if statuses == [200]:
        assert result.replies[0].echo()["body_length"] == 1

    count = 1000
    tag = token()
    requests = b"".join(
        f"GET /pipe-{tag}-{i} HTTP/1.1\r\nHost: app.test\r\n".encode()
        + fresh.cookie_line
        + (b"Connection: close\r\n" if i == count - 1 else b"")
        + b"\r\n"
        for i in range(count)
    )
    mark = recorder.mark()
    data = bytearray()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", fresh.port), timeout=30) as sock:
        sender = threading.Thread(target=sock.sendall, args=(requests,))
        sender.start()
        while chunk := sock.recv(1 << 20):
            data += chunk
        sender.join()
    assert time.monotonic() - started < 20
    replies, leftover = parse_replies(bytes(data), closed=True)
    assert leftover == b""
    assert [r.status for r in replies] == [200] * len(replies)
    assert [r.echo()["raw_path"] for r in replies] == [
        f"/pipe-{tag}-{i}" for i in range(len(replies))
    ]
    assert len(replies) == count  # all answered: none dropped, none answered twice
    assert [s.raw_path for s in recorder.since(mark)] == [f"/pipe-{tag}-{i}" for i in range(count)]
    growth_kib = fresh.process.rss_peak_kib() - baseline
    assert growth_kib < 48 * 1024, f"peak RSS grew by {growth_kib} KiB"
