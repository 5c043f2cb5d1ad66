"""WebSocket limits (THREATS.md HT-15 and HT-13, issue 14 item 13): an idle socket is closed
(1001), both ends are pinged and one that stops answering is dropped, one user holds at most
GATEWAY_PROXY__WEBSOCKET_MAX_PER_USER sockets (429 before the upgrade), every connection slot
taken is 503 at once rather than a wait without end, the application must accept within a
deadline (504), and a message over GATEWAY_PROXY__WEBSOCKET_MAX_MESSAGE_BYTES (4 MiB by default)
closes the socket with 1009 and a warning. Real gateways in-process, the real echo upstream."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from support.browser import API, Browser
from support.fixtures import Launch, Running, signed_in
from support.gateway import idp_ssl
from support.websockets import chatting, closing, echoes, opened

pytestmark = pytest.mark.threat("HT-15", "F-23")

KIB = 1024
MIB = 1024 * KIB


async def test_the_default_cap_is_64_sockets_per_user(gateway: Running) -> None:
    await signed_in(gateway)
    held = [await opened(gateway.browser) for _ in range(64)]
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await gateway.browser.session.ws_connect(gateway.url + "/_ws")
    assert refused.value.status == 429
    for ws in held:
        await ws.close()


async def test_an_idle_websocket_is_closed(launch: Launch) -> None:
    running = await launch(
        proxy={"websocket_idle_timeout_seconds": 1.0, "websocket_heartbeat_seconds": 0.2}
    )
    await signed_in(running)
    ws = await opened(running.browser)
    # Pings are answered all along, yet they are not traffic: 1001 once nothing else passed.
    assert await closing(ws, seconds=4.0) == (1001, "idle timeout")


async def test_messages_keep_a_websocket_from_idling_out(launch: Launch) -> None:
    running = await launch(proxy={"websocket_idle_timeout_seconds": 1.0})
    await signed_in(running)
    ws = await opened(running.browser)
    assert await chatting(ws, seconds=2.5)
    assert await closing(ws, seconds=4.0) == (1001, "idle timeout")


async def test_the_gateway_pings_the_client(launch: Launch) -> None:
    running = await launch(proxy={"websocket_heartbeat_seconds": 0.3})
    await signed_in(running)
    ws = await opened(running.browser, autoping=False)
    message = await ws.receive(timeout=3)
    assert message.type == WSMsgType.PING
    await ws.close()


async def test_a_client_that_stops_answering_pings_is_dropped(launch: Launch) -> None:
    running = await launch(proxy={"websocket_heartbeat_seconds": 0.3})
    await signed_in(running)
    ws = await opened(running.browser, autoping=False)  # and never answers
    deadline = time.monotonic() + 4
    while True:
        message = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        if message.type != WSMsgType.PING:
            break
    assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR)


async def test_an_application_that_stops_answering_pings_is_dropped(launch: Launch) -> None:
    running = await launch(proxy={"websocket_heartbeat_seconds": 0.3})
    await signed_in(running)
    ws = await running.browser.session.ws_connect(running.url + "/_ws_deaf")
    code, _ = await closing(ws, seconds=4.0)
    assert code == 1011


async def test_a_user_past_the_cap_is_refused_before_the_upgrade(
    launch: Launch, idp: Any, caplog: pytest.LogCaptureFixture
) -> None:
    running = await launch(proxy={"websocket_max_per_user": 2})
    await signed_in(running)
    first, second = await opened(running.browser), await opened(running.browser)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await running.browser.session.ws_connect(running.url + "/_ws")
    assert refused.value.status == 429
    assert any(getattr(r, "event", None) == "websocket_refused" for r in caplog.records)
    bob = Browser(running.url, "https://app.test", idp_ssl(idp.ca_path))
    try:
        assert (await bob.sign_in("/", "bob")).status == 302
        bobs = await opened(bob)
        assert await echoes(bobs)  # another user: a cap of his own
        await bobs.close()
    finally:
        await bob.close()
    await first.close()
    for _ in range(50):  # the slot comes free once the gateway has seen the close
        try:
            third = await opened(running.browser)
            break
        except aiohttp.WSServerHandshakeError:
            await asyncio.sleep(0.05)
    else:
        raise AssertionError("the closed socket's place was not given back")
    assert await echoes(third) and await echoes(second)
    await third.close()
    await second.close()


async def test_every_connection_slot_taken_is_503_at_once(
    launch: Launch, idp: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Two slots, one per client (the share): alice and bob hold one socket each, jose has none.
    running = await launch(proxy={"max_connections": 2})
    browsers = [Browser(running.url, "https://app.test", idp_ssl(idp.ca_path)) for _ in range(3)]
    try:
        for browser, user in zip(browsers, ("alice", "bob", "jose"), strict=True):
            assert (await browser.sign_in("/", user)).status == 302
        held = [await opened(browsers[0]), await opened(browsers[1])]
        jose = browsers[2]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with asyncio.timeout(2):  # not queued behind sockets that may run for hours
                await jose.session.ws_connect(running.url + "/_ws")
        assert refused.value.status == 503
        assert "every connection to the application is in use" in caplog.text
        assert (await jose.get("/x", headers=API)).status == 200  # HTTP has its own pool
        for ws in held:
            assert await echoes(ws)
            await ws.close()
    finally:
        for browser in browsers:
            await browser.close()


async def test_an_application_slow_to_accept_is_504(launch: Launch) -> None:
    running = await launch(proxy={"websocket_open_timeout_seconds": 0.5})
    await signed_in(running)
    started = time.monotonic()
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await running.browser.session.ws_connect(running.url + "/_ws_stall?seconds=3")
    assert refused.value.status == 504
    assert time.monotonic() - started < 2.5
    ws = await opened(running.browser, path="/_ws_stall?seconds=0.1")
    assert await echoes(ws)
    await ws.close()


@pytest.mark.threat("HT-13")
@pytest.mark.parametrize("size", [64 * KIB, 64 * KIB - 1, 1])
async def test_a_message_up_to_the_limit_passes(launch: Launch, size: int) -> None:
    running = await launch(proxy={"websocket_max_message_bytes": 64 * KIB})
    await signed_in(running)
    ws = await opened(running.browser)
    payload = secrets.token_bytes(size)
    await ws.send_bytes(payload)
    assert (await ws.receive(timeout=5)).data == payload[::-1]
    await ws.send_str(f"big:{size}")
    assert len((await ws.receive(timeout=5)).data) == size
    await ws.close()


@pytest.mark.threat("HT-13")
async def test_a_message_over_the_limit_from_the_client_closes_1009_with_a_warning(
    launch: Launch, caplog: pytest.LogCaptureFixture
) -> None:
    running = await launch(proxy={"websocket_max_message_bytes": 64 * KIB})
    await signed_in(running)
    ws = await opened(running.browser)
    await ws.send_bytes(b"x" * (64 * KIB + 1))
    code, _ = await closing(ws)
    assert code == 1009
    [warning] = [r for r in caplog.records if "MAX_MESSAGE_BYTES" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "from the client" in warning.getMessage() and "65536" in warning.getMessage()


@pytest.mark.threat("HT-13")
async def test_a_message_over_the_limit_from_the_application_closes_1009_with_a_warning(
    launch: Launch, caplog: pytest.LogCaptureFixture
) -> None:
    running = await launch(proxy={"websocket_max_message_bytes": 64 * KIB})
    await signed_in(running)
    ws = await opened(running.browser)
    await ws.send_str(f"big:{64 * KIB + 1}")
    code, _ = await closing(ws)
    assert code == 1009
    [warning] = [r for r in caplog.records if "MAX_MESSAGE_BYTES" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "from the application" in warning.getMessage()


@pytest.mark.threat("HT-13")
async def test_the_default_limit_is_4_mib(
    gateway: Running, caplog: pytest.LogCaptureFixture
) -> None:
    await signed_in(gateway)
    ws = await opened(gateway.browser)
    payload = secrets.token_bytes(4 * MIB)
    await ws.send_bytes(payload)
    assert (await ws.receive(timeout=10)).data == payload[::-1]
    await ws.send_bytes(b"x" * (5 * MIB))
    code, _ = await closing(ws, seconds=10)
    assert code == 1009
    [warning] = [r for r in caplog.records if "MAX_MESSAGE_BYTES" in r.getMessage()]
    assert "(4194304)" in warning.getMessage()
