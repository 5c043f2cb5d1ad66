"""THREATS.md F-23 against real `python -m gateway serve` processes over raw loopback sockets: a
request head that trickles in is cut off (408), a silent connection is closed, kept-alive
connections idle out, the client-connection cap closes the connections idle longest so that
signed-in users always get through, and a flood of idle connections keeps the gateway's memory and
file descriptors bounded."""

from __future__ import annotations

import asyncio
import resource
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import pytest
from support.browser import Browser
from support.gateway import PUBLIC_URL, SESSION_COOKIE, GatewayProcess, idp_ssl, settings_for
from support.ports import free_port
from support.procfs import open_fds, rss_kib, soft_fd_limit
from support.threaded import ThreadedServer

from gateway.server.connections import client_connection_limit

pytestmark = pytest.mark.threat("F-23")

HEADER_TIMEOUT: Final = 1.0
KEEPALIVE_TIMEOUT: Final = 3.0
CAP: Final = 40
HEALTHZ: Final = b"GET /.auth/healthz HTTP/1.1\r\nHost: app.test\r\n\r\n"
METRICS_PORT: Final = free_port()


def closes(reason: str) -> float:
    """The gateway's count of connections it closed for `reason` (its metrics listener)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5) as page:
        text = page.read().decode()
    name = f'msal_gateway_client_connections_closed_total{{reason="{reason}"}} '
    found = [line for line in text.splitlines() if line.startswith(name)]
    return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


@dataclass
class Served:
    process: GatewayProcess
    cookie: str
    stderr: list[bytes]

    @property
    def port(self) -> int:
        return self.process.port

    def signed_in(self, path: str) -> bytes:
        return (
            f"GET {path} HTTP/1.1\r\nHost: app.test\r\nAccept: application/json\r\n"
            f"Cookie: {SESSION_COOKIE}={self.cookie}\r\n\r\n"
        ).encode()

    def log(self) -> bytes:
        return b"".join(self.stderr)


@contextmanager
def running(idp: Any, upstream: ThreadedServer, env: dict[str, str]) -> Iterator[Served]:
    process = GatewayProcess(settings_for(idp, upstream.url), extra_env=env)
    stderr: list[bytes] = []
    assert process.process.stderr is not None
    # Drained as it is written: a full pipe would stall the gateway.
    reader = threading.Thread(target=lambda: stderr.extend(process.process.stderr or []))
    reader.start()
    try:
        asyncio.run(process.ready())
        yield Served(process, asyncio.run(sign_in(process.url, idp)), stderr)
    finally:
        process.stop()
        reader.join(timeout=10)


async def sign_in(url: str, idp: Any) -> str:
    browser = Browser(url, PUBLIC_URL, idp_ssl(idp.ca_path))
    try:
        assert (await browser.sign_in("/")).status == 302
        value = browser.cookie(SESSION_COOKIE)
        assert value is not None
        return value
    finally:
        await browser.close()  # its keep-alive connections to the gateway with it
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def bounded(idp_server: Any, upstream: ThreadedServer) -> Iterator[Served]:
    """A gateway with short deadlines and a small cap, alice signed in."""
    idp_server.reset()
    env = {
        "GATEWAY_PROXY__HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "GATEWAY_PROXY__KEEPALIVE_TIMEOUT_SECONDS": str(KEEPALIVE_TIMEOUT),
        "GATEWAY_PROXY__MAX_CLIENT_CONNECTIONS": str(CAP),
        "GATEWAY_METRICS_LISTEN": f"127.0.0.1:{METRICS_PORT}",
    }
    with running(idp_server, upstream, env) as served:
        yield served


# ---- raw HTTP/1.1 ----


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One response with a Content-Length body, leaving the connection open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    assert len(body) == length, "a second response arrived unasked"
    return int(head.split(b" ", 2)[1]), body


def until_closed(sock: socket.socket, seconds: float) -> tuple[bytes, float | None]:
    """Everything the gateway sends within `seconds`, and when (after now) it closed, if it did."""
    started = time.monotonic()
    data = b""
    sock.settimeout(0.05)
    while (elapsed := time.monotonic() - started) < seconds:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data, elapsed
        if not chunk:
            return data, elapsed
        data += chunk
    return data, None


def is_closed(sock: socket.socket) -> bool:
    """The gateway has closed it (EOF or reset); it must not have sent anything else."""
    timeout = sock.gettimeout()
    sock.setblocking(False)  # with a timeout, recv would wait for the socket to be readable
    try:
        data = sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.settimeout(timeout)
    assert data == b""
    return True


# ---- the request-head deadline and idle keep-alive ----


def test_head_sent_one_byte_at_a_time_is_cut_off_with_408(bounded: Served) -> None:
    head = b"GET /loris HTTP/1.1\r\nHost: app.test\r\nX-Slow: " + b"x" * 100
    before = closes("head_timeout")
    with connect(bounded.port) as sock:
        started = time.monotonic()
        try:
            for byte in head:
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
        except OSError:
            pass  # closed by the gateway mid-way
        data, _ = until_closed(sock, 3.0)
        closed_after = time.monotonic() - started
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert b"loris" not in data and b"X-Slow" not in data  # nothing of the request echoed
    assert HEADER_TIMEOUT - 0.1 <= closed_after < HEADER_TIMEOUT + 1.5, closed_after
    assert b"request_head_timeout" in bounded.log()
    assert closes("head_timeout") - before == 1


def test_a_connection_that_never_speaks_is_closed_silently(bounded: Served) -> None:
    with connect(bounded.port) as sock:
        data, closed_after = until_closed(sock, HEADER_TIMEOUT + 2)
    assert data == b""
    assert closed_after is not None
    assert HEADER_TIMEOUT - 0.1 <= closed_after < HEADER_TIMEOUT + 1.5, closed_after


def test_kept_alive_connection_waits_past_the_head_deadline_then_idles_out(
    bounded: Served,
) -> None:
    """Between requests the head deadline does not run: an idle kept-alive connection takes a
    request after longer than the deadline, and is closed by the keep-alive timeout."""
    with connect(bounded.port) as sock:
        sock.sendall(HEALTHZ)
        assert read_response(sock)[0] == 200
        time.sleep(HEADER_TIMEOUT + 0.5)
        sock.sendall(bounded.signed_in("/after-a-pause"))
        assert read_response(sock)[0] == 200
        data, closed_after = until_closed(sock, KEEPALIVE_TIMEOUT + 2)
    assert data == b""
    assert closed_after is not None
    assert KEEPALIVE_TIMEOUT - 0.6 <= closed_after < KEEPALIVE_TIMEOUT + 1.5, closed_after


def test_head_deadline_on_a_kept_alive_connection_runs_from_its_first_byte(
    bounded: Served,
) -> None:
    with connect(bounded.port) as sock:
        sock.sendall(HEALTHZ)
        assert read_response(sock)[0] == 200
        time.sleep(0.5)
        sock.sendall(b"GET /half HTTP/1.1\r\nHost: ")
        started = time.monotonic()
        data, closed_after = until_closed(sock, HEADER_TIMEOUT + 2)
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert closed_after is not None
    assert HEADER_TIMEOUT - 0.1 <= time.monotonic() - started < HEADER_TIMEOUT + 1.5


# ---- the client-connection cap ----


def test_new_connections_close_the_connections_idle_longest(bounded: Served) -> None:
    time.sleep(0.2)  # connections of earlier tests are gone
    before = closes("idle_at_limit")
    socks = []
    try:
        for _ in range(CAP + CAP // 2):
            sock = connect(bounded.port)
            socks.append(sock)
            sock.sendall(HEALTHZ)
            assert read_response(sock)[0] == 200
        time.sleep(0.2)
        closed = [is_closed(sock) for sock in socks]
        # The first ones to go idle were closed to make room; the newest are all open.
        assert closed[: CAP // 2] == [True] * (CAP // 2), closed
        assert closed[CAP // 2 :] == [False] * CAP, closed
        assert closes("idle_at_limit") - before >= CAP // 2  # operators see it
        # A signed-in user still gets through, on a new connection, at once.
        with connect(bounded.port) as user:
            started = time.monotonic()
            user.sendall(bounded.signed_in("/through-the-flood"))
            assert read_response(user)[0] == 200
            assert time.monotonic() - started < 1.0
    finally:
        for sock in socks:
            sock.close()


def test_when_every_connection_is_busy_a_new_one_is_closed_at_once(bounded: Served) -> None:
    time.sleep(0.2)  # connections of earlier tests are gone
    before = closes("refused_at_limit")
    busy = []
    try:
        for _ in range(CAP):
            sock = connect(bounded.port)
            busy.append(sock)
            sock.sendall(bounded.signed_in("/_slow?seconds=2"))
        time.sleep(0.5)  # every request is in progress
        with connect(bounded.port) as extra:
            extra.sendall(HEALTHZ)
            data, closed_after = until_closed(extra, 1.0)
        assert data == b"" and closed_after is not None
        assert closes("refused_at_limit") - before == 1
        for sock in busy:  # the requests in progress are not disturbed
            sock.settimeout(10)
            assert read_response(sock)[0] == 200
    finally:
        for sock in busy:
            sock.close()


def test_the_cap_fits_the_open_file_limit() -> None:
    assert client_connection_limit(4096, 1_048_576, reserved=320) == 4096
    assert client_connection_limit(4096, 1024, reserved=320) == 1024 - 320 - 64


# ---- a flood of idle keep-alive connections: memory, descriptors, responsiveness ----

FLOOD: Final = 2000
FLOOD_CAP: Final = 1000


@pytest.fixture
def flooded(idp: Any, upstream: ThreadedServer) -> Iterator[Served]:
    """A gateway started with a soft open-file limit of 1024 (it raises it itself) and a cap of
    FLOOD_CAP client connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < FLOOD + FLOOD_CAP + 200:
        pytest.skip(f"the hard open-file limit ({hard}) is too low for the flood")
    env = {"GATEWAY_PROXY__MAX_CLIENT_CONNECTIONS": str(FLOOD_CAP)}
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 1024), hard))  # the gateway inherits it
    try:
        with running(idp, upstream, env) as served:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this process holds the flood
            yield served
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def open_idle(port: int, count: int) -> list[asyncio.StreamWriter]:
    """`count` connections that each make one request and then stay idle (keep-alive)."""
    gate = asyncio.Semaphore(100)

    async def one() -> asyncio.StreamWriter:
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(HEALTHZ)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            return writer

    return await asyncio.gather(*(one() for _ in range(count)))


async def timed_requests(served: Served, count: int) -> list[float]:
    """Signed-in requests, each on a new connection; their latencies."""
    latencies = []
    for i in range(count):
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(served.signed_in(f"/during-the-flood/{i}"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 "), head
        latencies.append(time.monotonic() - started)
        writer.close()
        await asyncio.sleep(0.01)
    return latencies


def test_a_flood_of_idle_connections_keeps_memory_and_descriptors_bounded(
    flooded: Served,
) -> None:
    pid = flooded.process.process.pid
    assert soft_fd_limit(pid) == resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # raised at start
    rss_before, fds_before = rss_kib(pid), open_fds(pid)

    async def flood() -> tuple[list[float], int, int]:
        writers = await open_idle(flooded.port, FLOOD)
        try:
            latencies = await timed_requests(flooded, 20)
            await asyncio.sleep(0.2)
            return latencies, rss_kib(pid), open_fds(pid)
        finally:
            for writer in writers:
                writer.close()

    latencies, rss_with, fds_with = asyncio.run(flood())
    assert fds_with <= fds_before + FLOOD_CAP, (fds_before, fds_with)
    # About 10 KiB per idle kept-alive connection (bench/idle_connections.py); the cap bounds it.
    growth_kib = rss_with - rss_before
    assert growth_kib < 24 * 1024, f"RSS grew by {growth_kib} KiB"
    assert max(latencies) < 2.0, latencies
