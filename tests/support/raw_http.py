"""Raw HTTP/1.1 over a loopback socket, for requests no client library would send: each piece its
own TCP segment, the answers parsed byte for byte (framing, header lines, bodies), and a check
that a response head holds nothing a header line cannot.

Request templates may hold `{cookie}`, replaced by the caller with a Cookie line (see
support.served.Served.cookie_line)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

# What a refused request may be answered with: a bad request, a body or a head that is too large.
REFUSED: Final = frozenset({400, 413, 431})
SAFE_REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
# A response header line as RFC 9110 allows it: a token, a colon, visible octets, SP and HTAB.
HEADER_LINE: Final = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e\x80-\xff]*$")


@dataclass
class Reply:
    version: bytes
    status: int
    head: bytes  # the header block as sent, without the status line
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def echo(self) -> dict[str, Any]:
        """What the echo upstream said it received."""
        data: dict[str, Any] = json.loads(self.body)
        return data


@dataclass
class Exchange:
    replies: list[Reply]
    closed: bool  # the gateway closed the connection (rather than keeping it idle)
    leftover: bytes  # bytes that did not parse as a complete response


def _dechunk(data: bytes) -> tuple[bytes, int] | None:
    body, at = b"", 0
    while True:
        end = data.find(b"\r\n", at)
        if end < 0:
            return None
        size = int(data[at:end].split(b";")[0], 16)
        at = end + 2
        if size == 0:
            trailer_end = data.find(b"\r\n\r\n", at - 2)
            return (body, trailer_end + 4) if trailer_end >= 0 else None
        if len(data) < at + size + 2:
            return None
        body += data[at : at + size]
        at += size + 2


def parse_replies(data: bytes, closed: bool) -> tuple[list[Reply], bytes]:
    replies: list[Reply] = []
    while data:
        split = data.find(b"\r\n\r\n")
        if split < 0:
            break
        status_line, _, head = data[:split].partition(b"\r\n")
        version, status, *_ = status_line.split(b" ", 2)
        headers = [
            (name.decode("latin-1").strip(), value.decode("latin-1").strip())
            for name, _, value in (line.partition(b":") for line in head.split(b"\r\n") if line)
        ]
        rest = data[split + 4 :]
        lengths = [v for k, v in headers if k.lower() == "content-length"]
        chunked = any(
            k.lower() == "transfer-encoding" and "chunked" in v.lower() for k, v in headers
        )
        code = int(status)
        if code in (101, 204, 304) or 100 <= code < 200:
            body, used = b"", 0
        elif lengths:
            used = int(lengths[0])
            if len(rest) < used:
                break
            body = rest[:used]
        elif chunked:
            decoded = _dechunk(rest)
            if decoded is None:
                break
            body, used = decoded
        elif closed:
            body, used = rest, len(rest)
        else:
            break
        replies.append(Reply(version, code, head, headers, body))
        data = rest[used:]
    return replies, data


def exchange(
    port: int,
    pieces: bytes | Sequence[bytes],
    *,
    idle: float = 0.5,
    deadline: float = 10.0,
    pause: float = 0.0,
) -> Exchange:
    """Send the bytes (each piece as its own TCP segment, `pause` seconds apart), then read until
    the gateway closes the connection or says nothing for `idle` seconds."""
    if isinstance(pieces, bytes):
        pieces = [pieces]
    data = bytearray()
    closed = False
    with socket.create_connection(("127.0.0.1", port), timeout=deadline) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for i, piece in enumerate(pieces):
                if i and pause:
                    time.sleep(pause)
                sock.sendall(piece)
        except OSError:
            pass  # the gateway refused and closed before taking everything
        sock.settimeout(idle)
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
    replies, leftover = parse_replies(bytes(data), closed)
    return Exchange(replies, closed, leftover)


def token() -> str:
    """A fresh tag for a case's paths, so its requests can be told from every other's."""
    return uuid.uuid4().hex[:16]


def assert_clean_head(reply: Reply) -> None:
    """No header line the gateway wrote carries CR/LF or anything else a header cannot hold,
    and nothing of the attacker's became a header of its own."""
    for line in reply.head.split(b"\r\n"):
        assert HEADER_LINE.match(line), line
    for name, value in reply.headers:
        assert name.lower() not in ("x-injected", "injected")
        if name.lower() == "set-cookie":
            assert not value.startswith("evil"), value
    for location in reply.header("Location"):
        assert not re.search(r"[\x00-\x20\x7f-\xff]", location), location
        assert location.startswith(("/", "https://127.0.0.1:")), location
    for rid in reply.header("X-Request-Id"):
        assert SAFE_REQUEST_ID.match(rid), rid


def get(target: bytes, *headers: bytes, cookie: bool = False) -> bytes:
    """A GET for `target` that closes the connection; `cookie` leaves the {cookie} placeholder."""
    return (
        b"GET "
        + target
        + b" HTTP/1.1\r\nHost: app.test\r\n"
        + (b"{cookie}" if cookie else b"")
        + b"".join(h + b"\r\n" for h in headers)
        + b"Connection: close\r\n\r\n"
    )


def split(data: bytes, size: int) -> list[bytes]:
    """`data` in pieces of `size` bytes, for exchange() to send one TCP segment each."""
    return [data[i : i + size] for i in range(0, len(data), size)]


async def raw_request(
    gateway_url: str,
    target: str,
    extra: str = "",
    *,
    method: str = "GET",
    cookie: str | None = None,
) -> tuple[int, bytes]:
    """One request sent byte for byte (the target untouched by any client library) on its own
    connection: the status and the body. `extra` is more header lines, each ending in CRLF."""
    host, port = gateway_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    cookies = f"Cookie: __Host-msal-gateway={cookie}\r\n" if cookie else ""
    length = "Content-Length: 0\r\n" if method in ("POST", "PUT", "PATCH", "DELETE") else ""
    writer.write(
        f"{method} {target} HTTP/1.1\r\nHost: app.test\r\nAccept: application/json\r\n"
        f"{cookies}{length}{extra}Connection: close\r\n\r\n".encode("latin-1")
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body
