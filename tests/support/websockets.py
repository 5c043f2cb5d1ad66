"""WebSocket clients through a gateway to the echo upstream's `/_ws`: open one past its greeting,
exchange messages, and wait for the gateway to close it (its code and reason)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import ClientWebSocketResponse, WSMsgType

from support.browser import Browser

Closed = tuple[int | None, str]


async def opened(browser: Browser, path: str = "/_ws", **options: Any) -> ClientWebSocketResponse:
    """A WebSocket through the gateway `browser` talks to, past the echo app's greeting. No
    client-side limit on message size: the gateway's is the one under test."""
    ws: ClientWebSocketResponse = await browser.session.ws_connect(
        browser.gateway_url + path, max_msg_size=0, **options
    )
    hello = await ws.receive_json(timeout=5)
    assert "user" in hello
    return ws


async def echoes(ws: ClientWebSocketResponse, text: str = "ping") -> bool:
    """Whether the echo app's answer to `text` comes back."""
    await ws.send_str(text)
    message = await ws.receive(timeout=5)
    return message.type == WSMsgType.TEXT and message.data == "echo:" + text


async def chatting(ws: ClientWebSocketResponse, seconds: float, every: float = 0.3) -> bool:
    """Exchange a message every `every` seconds for `seconds`: whether every one came back."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not await echoes(ws):
            return False
        await asyncio.sleep(every)
    return True


async def closing(ws: ClientWebSocketResponse, seconds: float = 5.0) -> Closed:
    """Wait for the gateway to close `ws`: its close code and reason. Fails if it stays open."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"still open after {seconds}s")
        try:
            message = await ws.receive(timeout=left)
        except TimeoutError:
            continue
        if message.type == WSMsgType.CLOSE:
            return ws.close_code, message.extra or ""
        if message.type in (WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR):
            return ws.close_code, ""
