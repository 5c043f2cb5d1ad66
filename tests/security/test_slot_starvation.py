"""Issue 14 item 12: a few slow clients cannot hang everyone. A request waits a bounded time for
a connection to the application (then 503 with Retry-After); one client holds at most its share
of the connections; a client that trickles its upload or does not read its answer is cut off
once it falls below the minimum pace, and its connection serves others. A real gateway process
(the production server) with one connection to the application, so that every slot matters."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from support.gateway import GatewayProcess, session_cookie, settings_for
from support.threaded import ThreadedServer

pytestmark = pytest.mark.threat("HT-15")

COOKIE = "__Host-msal-gateway"


class Gateway:
    def __init__(self, process: GatewayProcess, cookies: dict[str, str]) -> None:
        self.process = process
        self.cookies = cookies
        self.host, port = process.url.removeprefix("http://").split(":")
        self.port = int(port)

    def headers(self, user: str) -> dict[str, str]:
        return {"Accept": "application/json", "Cookie": f"{COOKIE}={self.cookies[user]}"}

    async def get(self, user: str, path: str) -> tuple[int, dict[str, Any], str]:
        async with (
            aiohttp.ClientSession() as client,
            client.get(self.process.url + path, headers=self.headers(user)) as response,
        ):
            return response.status, await response.json(), response.headers.get("Retry-After", "")


@pytest.fixture
async def gateway(idp: Any, upstream: ThreadedServer) -> AsyncIterator[Gateway]:
    settings = settings_for(
        idp,
        upstream.url,
        proxy={
            "max_connections": 1,
            "max_connections_per_client": 1,
            "slot_wait_seconds": 1,
            "client_min_bytes_per_second": 10_000,
            "client_timeout_seconds": 1,
        },
    )
    process = GatewayProcess(settings)
    try:
        await process.ready()
        cookies = {user: await session_cookie(process.url, idp, user) for user in ("alice", "bob")}
        yield Gateway(process, cookies)
    finally:
        log = process.stop()
        assert "Traceback" not in log, log[-3000:]


async def test_waiting_for_a_connection_ends_with_503(gateway: Gateway) -> None:
    holding = asyncio.create_task(gateway.get("alice", "/_slow?seconds=3"))
    await asyncio.sleep(0.5)
    began = time.monotonic()
    status, body, retry = await gateway.get("bob", "/x")
    waited = time.monotonic() - began
    assert (status, body["error"], retry) == (503, "upstream_busy", "5")
    assert 0.5 < waited < 2.9  # the bounded wait, not the slow request's end
    assert (await holding)[0] == 200
    assert (await gateway.get("bob", "/x"))[0] == 200  # free again


async def test_one_client_holds_at_most_its_share(gateway: Gateway) -> None:
    holding = asyncio.create_task(gateway.get("alice", "/_slow?seconds=2"))
    await asyncio.sleep(0.5)
    began = time.monotonic()
    status, body, _ = await gateway.get("alice", "/x")
    assert (status, body["error"]) == (503, "upstream_busy")
    assert "your requests" in body["message"]
    assert time.monotonic() - began < 0.5  # refused at once, no slot waited for
    assert (await holding)[0] == 200


async def raw_connection(gateway: Gateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(gateway.host, gateway.port)


@pytest.mark.parametrize(("piece", "every"), [(1, 0.3), (100, 0.5)], ids=["bytes", "dribbles"])
async def test_a_trickled_upload_is_cut_off(gateway: Gateway, piece: int, every: float) -> None:
    reader, writer = await raw_connection(gateway)
    writer.write(
        b"POST /upload HTTP/1.1\r\nHost: app.test\r\nAccept: application/json\r\n"
        b"Cookie: %s=%s\r\nContent-Length: 100000\r\n\r\n"
        % (COOKIE.encode(), gateway.cookies["alice"].encode())
    )
    began = time.monotonic()
    answer = b""
    while time.monotonic() - began < 8 and not answer:
        with_timeout = asyncio.wait_for(reader.read(65536), every)
        try:
            answer = await with_timeout
        except TimeoutError:
            writer.write(b"x" * piece)
            await writer.drain()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"client_too_slow" in answer
    assert time.monotonic() - began < 6
    assert (await gateway.get("bob", "/x"))[0] == 200


async def test_an_upload_at_a_good_pace_passes(gateway: Gateway) -> None:
    body = b"y" * 60_000
    reader, writer = await raw_connection(gateway)
    writer.write(
        b"POST /upload HTTP/1.1\r\nHost: app.test\r\nAccept: application/json\r\n"
        b"Cookie: %s=%s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        % (COOKIE.encode(), gateway.cookies["alice"].encode(), len(body))
    )
    for start in range(0, len(body), 20_000):  # 20 kB every 0.5 s: 40 kB/s, over the minimum
        writer.write(body[start : start + 20_000])
        await writer.drain()
        await asyncio.sleep(0.5)
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b'"body_length":60000' in answer.replace(b" ", b"")


async def test_a_client_that_does_not_read_is_cut_off_and_frees_its_slot(
    gateway: Gateway,
) -> None:
    sock = socket.create_connection((gateway.host, gateway.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills up soon
    sock.sendall(
        b"GET /_bytes?n=50000000 HTTP/1.1\r\nHost: app.test\r\n"
        b"Cookie: %s=%s\r\n\r\n" % (COOKIE.encode(), gateway.cookies["alice"].encode())
    )
    try:
        await asyncio.sleep(0.5)  # the answer starts; the client reads nothing
        began = time.monotonic()
        deadline = began + 10
        status = 0
        while time.monotonic() < deadline:  # bob is served once alice's slot is given back
            status = (await gateway.get("bob", "/x"))[0]
            if status == 200:
                break
            await asyncio.sleep(0.2)
        assert status == 200
        # Alice's connection was cut with a reset: what the kernel held for her is gone too.
        sock.settimeout(5)
        received = 0
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
        assert received < 50_000_000
    except ConnectionResetError:
        pass
    finally:
        sock.close()
