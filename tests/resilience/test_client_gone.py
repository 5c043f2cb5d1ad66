"""Issue 14 item 15: a client that goes away abandons its request at the application. The
gateway closes its connection to the application (which sees the request end) instead of
holding a connection slot until a slow application is done. A real gateway process (the
production server), a raw application that never answers and notes when its peer leaves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.gateway import GatewayProcess, session_cookie, settings_for


class SilentApp:
    """Reads each request head and never answers; records when each connection ends."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.ended: list[float] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.heads.append(await reader.readuntil(b"\r\n\r\n"))
            while await reader.read(65536):  # until the gateway closes its side
                pass
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        self.ended.append(time.monotonic())
        writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


@pytest.fixture
async def app() -> AsyncIterator[SilentApp]:
    silent = SilentApp()
    await silent.start()
    yield silent
    await silent.stop()


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_client_that_leaves_ends_its_request_at_the_app(
    idp: Any, app: SilentApp, method: str
) -> None:
    settings = settings_for(idp, app.url, proxy={"read_timeout_seconds": 60})
    gateway = GatewayProcess(settings)
    try:
        await gateway.ready()
        cookie = await session_cookie(gateway.url, idp, return_to="/after")
        host, port = gateway.url.removeprefix("http://").split(":")
        _, writer = await asyncio.open_connection(host, int(port))
        body = "Content-Length: 2\r\n\r\nhi" if method == "POST" else "\r\n"
        writer.write(
            f"{method} /slow HTTP/1.1\r\nHost: app.test\r\nAccept: application/json\r\n"
            f"Cookie: __Host-msal-gateway={cookie}\r\n{body}".encode()
        )
        await writer.drain()
        for _ in range(100):  # until the app has the request
            if app.heads:
                break
            await asyncio.sleep(0.05)
        assert app.heads and app.heads[0].startswith(f"{method} /slow ".encode())
        assert app.ended == []
        left = time.monotonic()
        writer.close()  # the client goes away, 60 s before the gateway would give up
        for _ in range(100):
            if app.ended:
                break
            await asyncio.sleep(0.05)
        assert app.ended, "the application's request was not abandoned"
        assert app.ended[0] - left < 5.0
        # The gateway is fine afterwards, and a client leaving is not an error to log.
        async with asyncio.timeout(10):
            await gateway.ready()
    finally:
        log = gateway.stop()
    assert "Traceback" not in log and "ERROR" not in log, log[-2000:]
