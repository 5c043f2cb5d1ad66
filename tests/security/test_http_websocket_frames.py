"""WebSocket frames through the gateway (THREATS.md A7: HT-13): large, fragmented and interleaved
frames round-trip, oversized ones are refused from their header, and memory stays bounded; frames
no library would send, written by hand on a raw socket to a real gateway process."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from collections.abc import Iterator
from typing import Final

import pytest
from support.raw_http import (
    exchange,
    get,
    split,
)
from support.served import Served

pytestmark = pytest.mark.threat("HT-13")

MIB: Final = 1024 * 1024


# ---- HT-13: WebSocket frames through the gateway ----


def masked(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return b""
    stream = (key * (len(payload) // 4 + 1))[: len(payload)]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")
    return value.to_bytes(len(payload), "big")


def ws_frame(
    opcode: int, payload: bytes, *, fin: bool = True, declared: int | None = None
) -> bytes:
    """A client frame (masked); `declared` claims another payload length than is sent."""
    length = len(payload) if declared is None else declared
    first = bytes([(0x80 if fin else 0) | opcode])
    if length < 126:
        head = first + bytes([0x80 | length])
    elif length < 65536:
        head = first + bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        head = first + bytes([0x80 | 127]) + struct.pack("!Q", length)
    key = os.urandom(4)
    return head + key + masked(payload, key)


class WebSocket:
    """A WebSocket client over a raw socket, for frames no library would send."""

    def __init__(self, port: int, cookie_line: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(
            b"GET /_ws HTTP/1.1\r\nHost: app.test\r\n"
            + cookie_line
            + b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
            + key
            + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        opcode, greeting = self.message()
        assert opcode == 1 and json.loads(greeting) == {"user": "alice@contoso.example"}

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError("the gateway closed the connection")
        self.buffer += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        taken, self.buffer = self.buffer[:n], self.buffer[n:]
        return taken

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frame(self) -> tuple[int, bool, bytes]:
        first, second = self._take(2)
        assert not second & 0x80, "a server frame must not be masked"
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._take(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._take(8))
        return first & 0x0F, bool(first & 0x80), self._take(length)

    def message(self) -> tuple[int, bytes]:
        opcode, fin, payload = self.frame()
        while not fin:
            _, fin, more = self.frame()
            payload += more
        return opcode, payload

    def close_code(self) -> int:
        """Frames until the close frame; its status code."""
        while True:
            opcode, _, payload = self.frame()
            if opcode == 8:
                (code,) = struct.unpack("!H", payload[:2])
                return int(code)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def websocket(served: Served) -> Iterator[WebSocket]:
    ws = WebSocket(served.port, served.cookie_line)
    yield ws
    ws.close()


def test_large_frame_round_trips(websocket: WebSocket) -> None:
    payload = os.urandom(MIB)
    websocket.send(ws_frame(2, payload))
    assert websocket.message() == (2, payload[::-1])


def test_fragmented_message_round_trips(websocket: WebSocket) -> None:
    payload = os.urandom(MIB)
    parts = split(payload, 4096)
    websocket.send(
        ws_frame(2, parts[0], fin=False)
        + b"".join(ws_frame(0, part, fin=False) for part in parts[1:-1])
        + ws_frame(0, parts[-1])
    )
    assert websocket.message() == (2, payload[::-1])


def test_control_frame_between_fragments(websocket: WebSocket) -> None:
    websocket.send(
        ws_frame(1, b"hel", fin=False) + ws_frame(9, b"are you there") + ws_frame(0, b"lo")
    )
    assert websocket.frame() == (10, True, b"are you there")
    assert websocket.message() == (1, b"echo:hello")


def test_fifty_thousand_empty_fragments_stay_cheap(websocket: WebSocket) -> None:
    started = time.monotonic()
    websocket.send(
        ws_frame(2, b"a", fin=False)
        + b"".join(ws_frame(0, b"", fin=False) for _ in range(50_000))
        + ws_frame(0, b"b")
    )
    assert websocket.message() == (2, b"ba")
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize(
    ("declared", "codes"),
    [
        (17 * MIB, {1009}),  # over the 4 MiB message limit (and the former 16 MiB)
        (2**62, {1009}),  # a length no one could send
        (2**63 + 5, {1002, 1009}),  # the most significant bit must be 0 (RFC 6455 5.2)
    ],
    ids=["17MiB", "2^62", "msb-set"],
)
def test_oversized_frame_is_refused_from_its_header(
    websocket: WebSocket, declared: int, codes: set[int]
) -> None:
    """The gateway closes as soon as it reads the length: it neither waits for nor allocates the
    payload."""
    started = time.monotonic()
    websocket.send(ws_frame(2, b"", declared=declared)[:14])  # the header and mask, no payload
    assert websocket.close_code() in codes
    assert time.monotonic() - started < 3.0


def test_fragments_over_the_limit_close_with_bounded_memory(fresh: Served) -> None:
    ws = WebSocket(fresh.port, fresh.cookie_line)
    try:
        ws.send(ws_frame(2, b"warm"))
        assert ws.message() == (2, b"mraw")
        baseline = fresh.process.rss_peak_kib()
        fragment = os.urandom(MIB)
        try:
            ws.send(ws_frame(2, fragment, fin=False))
            for _ in range(24):  # 25 MiB in all, against a 4 MiB limit
                ws.send(ws_frame(0, fragment, fin=False))
        except OSError:
            pass  # closed by the gateway before everything was sent
        assert ws.close_code() == 1009
    finally:
        ws.close()
    growth_kib = fresh.process.rss_peak_kib() - baseline
    assert growth_kib < 64 * 1024, f"peak RSS grew by {growth_kib} KiB"
    healthz = exchange(fresh.port, get(b"/.auth/healthz"))
    assert [r.status for r in healthz.replies] == [200]


def test_three_sockets_with_15_mib_messages_stay_under_the_limit(fresh: Served) -> None:
    """Three sockets each sending a 15 MiB message (in 1 MiB fragments) grew the peak RSS by
    45 MiB under the former fixed 16 MiB limit; the 4 MiB default
    (GATEWAY_PROXY__WEBSOCKET_MAX_MESSAGE_BYTES) refuses each at its fifth fragment, so together
    they hold at most about 12 MiB."""
    sockets = [WebSocket(fresh.port, fresh.cookie_line) for _ in range(3)]
    try:
        for ws in sockets:
            ws.send(ws_frame(2, b"warm"))
            assert ws.message() == (2, b"mraw")
        baseline = fresh.process.rss_peak_kib()
        fragment = os.urandom(MIB)
        for ws in sockets:
            try:
                ws.send(ws_frame(2, fragment, fin=False))
                for _ in range(13):
                    ws.send(ws_frame(0, fragment, fin=False))
                ws.send(ws_frame(0, fragment))
            except OSError:
                pass  # closed by the gateway before everything was sent
        assert [ws.close_code() for ws in sockets] == [1009] * 3
    finally:
        for ws in sockets:
            ws.close()
    growth_kib = fresh.process.rss_peak_kib() - baseline
    assert growth_kib < 24 * 1024, f"peak RSS grew by {growth_kib} KiB"
