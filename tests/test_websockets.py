"""WebSockets through the real gateway to the real echo app: a relayed socket ends with its session
(sign-out on any replica, revocation, front-channel logout, idle and absolute expiry, an API
client's token expiry; THREATS.md HT-21), and is bounded in time, size and number (HT-13, HT-15):
idle timeout, heartbeat, per-user cap, connection slots, open deadline, largest message."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from support.browser import Browser
from support.fixtures import Launch, Running
from support.gateway import idp_ssl, shared_redis
from support.redis_server import RedisServer
from test_signin import API, signed_in

from gateway.keys import SESSIONS, SOCKETS

ALICE_OID = "0b7e2c1d-4a5f-4e3b-8c9d-1e2f3a4b5c6d"
ADMIN_TOKEN = secrets.token_urlsafe(32)
GATEWAY_API = "api://gateway"
ENDED = (1008, "session ended")
KIB = 1024
MIB = 1024 * KIB

Closed = tuple[int | None, str]


async def opened(
    running: Running, browser: Browser | None = None, path: str = "/_ws", **options: Any
) -> ClientWebSocketResponse:
    """A WebSocket to the echo app through the gateway, past its greeting."""
    session = (browser or running.browser).session
    ws: ClientWebSocketResponse = await session.ws_connect(
        running.url + path, max_msg_size=0, **options
    )
    hello = await ws.receive_json(timeout=5)
    assert "user" in hello
    return ws


async def echoes(ws: ClientWebSocketResponse, text: str = "ping") -> bool:
    await ws.send_str(text)
    message = await ws.receive(timeout=5)
    return message.type == WSMsgType.TEXT and message.data == "echo:" + text


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


async def chatting(ws: ClientWebSocketResponse, seconds: float, every: float = 0.3) -> bool:
    """Exchange a message every `every` seconds for `seconds`: whether every one came back."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not await echoes(ws):
            return False
        await asyncio.sleep(every)
    return True


def audited(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "gateway.audit" and getattr(r, "event", None) == event
    ]


async def share_session(source: Running, target: Running) -> None:
    """`target`'s browser gets the session cookie `source`'s browser signed in with."""
    cookie = source.settings.session_cookie_name
    value = source.browser.cookie(cookie)
    assert value is not None
    target.browser.jar.clear()
    target.browser.jar.update_cookies({cookie: value}, target.browser.jar_origin())


async def until(check: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds}s: {what}")
        await asyncio.sleep(0.01)


def session_key(running: Running) -> str:
    cookie = running.browser.cookie(running.settings.session_cookie_name)
    assert cookie is not None
    return running.app[SESSIONS].key(cookie)


# ---- the socket ends with its session ----


async def test_sign_out_closes_the_sessions_websockets(
    gateway: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.audit")
    await signed_in(gateway)
    sockets = [await opened(gateway), await opened(gateway)]
    assert all([await echoes(ws) for ws in sockets])
    response = await gateway.browser.get("/.auth/logout")  # as another tab would
    assert response.status == 302
    for ws in sockets:
        assert await closing(ws) == ENDED
    [first, *_] = audited(caplog, "websocket_closed")
    assert first.levelno == logging.INFO
    assert getattr(first, "reason", None) == "session_ended"
    assert getattr(first, "user", "").startswith(ALICE_OID)


async def test_a_refreshed_session_keeps_its_websockets(gateway: Running) -> None:
    await signed_in(gateway)
    ws = await opened(gateway)
    refreshed = await gateway.browser.session.post(gateway.url + "/.auth/refresh", headers=API)
    assert refreshed.status == 200, await refreshed.text()
    await asyncio.sleep(0.3)  # a changed record is read again: still there
    assert await echoes(ws)
    await ws.close()


async def test_signing_in_again_closes_the_previous_sessions_websockets(gateway: Running) -> None:
    await signed_in(gateway)
    ws = await opened(gateway)
    browser = gateway.browser
    started = await browser.get("/.auth/login/aad?post_login_redirect_uri=/")
    assert started.status == 302
    auth = await browser.authorize(started.headers["Location"], "alice")
    assert (await browser.deliver(auth)).status == 302  # deletes the session the cookie named
    assert await closing(ws) == ENDED
    assert await echoes(await opened(gateway))  # the new session's sockets run


async def test_revocation_closes_every_websocket_of_the_user(
    launch: Launch, idp: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.audit")
    running = await launch(admin={"token": ADMIN_TOKEN})
    laptop = Browser(running.url, "https://app.test", idp_ssl(idp.ca_path))
    bob = Browser(running.url, "https://app.test", idp_ssl(idp.ca_path))
    try:
        await signed_in(running)
        assert (await laptop.sign_in("/", "alice")).status == 302
        assert (await bob.sign_in("/", "bob")).status == 302
        alices = [await opened(running), await opened(running, laptop)]
        bobs = await opened(running, bob)
        done = await running.browser.session.post(
            running.url + "/.auth/admin/revoke",
            json={"user": ALICE_OID},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert (await done.json()) == {"revoked": 2}
        for ws in alices:
            assert await closing(ws) == ENDED
        assert await echoes(bobs)
        assert len(audited(caplog, "websocket_closed")) == 2
        await bobs.close()
    finally:
        await laptop.close()
        await bob.close()


async def test_front_channel_logout_closes_the_websockets_of_its_sid(
    gateway: Running, idp: Any
) -> None:
    idp.set_token_faults(id_token_claims={"sid": "sso-session-9"})
    try:
        await signed_in(gateway)
    finally:
        idp.set_token_faults()
    ws = await opened(gateway)
    anyone = Browser(gateway.url, "https://app.test", idp_ssl(idp.ca_path))
    try:
        response = await anyone.get("/.auth/logout/frontchannel?sid=sso-session-9")
        assert response.status == 200
    finally:
        await anyone.close()
    assert await closing(ws) == ENDED


@pytest.mark.parametrize("cache_seconds", [5.0, 0.0], ids=["cache", "no-cache"])
async def test_sign_out_on_another_replica_closes_the_websocket(
    launch: Launch, redis_url: str, cache_seconds: float
) -> None:
    shared = {**shared_redis(redis_url), "session": {"cache_seconds": cache_seconds}}
    first, second = await launch(**shared), await launch(**shared)
    await signed_in(first)
    await share_session(first, second)
    ws = await opened(second)
    assert await echoes(ws)
    await until(lambda: second.app[SOCKETS].following, "the notice feed is up")
    assert (await first.browser.get("/.auth/logout")).status == 302
    # The notice arrives in milliseconds; the periodic check (every 5 s) is not needed.
    assert await closing(ws, seconds=2.0) == ENDED
    assert (await second.browser.get("/x", headers=API)).status == 401


async def test_a_session_ended_without_a_notice_is_caught_by_the_periodic_check(
    launch: Launch, redis_server: RedisServer, redis_url: str
) -> None:
    running = await launch(**shared_redis(redis_url), session={"cache_seconds": 0.5})
    await signed_in(running)
    ws = await opened(running)
    # Gone from the store with no notice at all: as if the notice was lost with the feed.
    assert redis_server.command("DEL", session_key(running)) == b":1\r\n"
    assert await closing(ws, seconds=3.0) == ENDED


async def test_a_session_that_cannot_be_checked_closes_its_websocket(
    idp: Any, launch: Launch
) -> None:
    server = RedisServer().start()
    try:
        running = await launch(
            **shared_redis(server.url),
            session={"cache_seconds": 0.3},
            redis={"socket_timeout_seconds": 0.3, "connect_timeout_seconds": 0.3},
        )
        await signed_in(running)
        ws = await opened(running)
        assert await echoes(ws)
        server.stop()
        # Fail closed, though not on the first failed read: 1013, try again later.
        assert await closing(ws, seconds=5.0) == (1013, "session cannot be checked")
    finally:
        server.cleanup()


async def test_idle_expiry_of_the_session_closes_its_websocket(launch: Launch) -> None:
    running = await launch(
        session={"idle_ttl_seconds": 2, "absolute_ttl_seconds": 60, "cache_seconds": 0.3}
    )
    await signed_in(running)
    ws = await opened(running)
    assert await closing(ws, seconds=5.0) == ENDED  # an open socket alone keeps nothing alive
    assert (await running.browser.get("/x", headers=API)).status == 401


async def test_websocket_traffic_keeps_its_session_alive(launch: Launch) -> None:
    running = await launch(
        session={"idle_ttl_seconds": 2, "absolute_ttl_seconds": 60, "cache_seconds": 0.3}
    )
    await signed_in(running)
    ws = await opened(running)
    assert await chatting(ws, seconds=3.5)  # past the idle lifetime, with messages passing
    assert (await running.browser.get("/x", headers=API)).status == 200
    await ws.close()


async def test_absolute_expiry_closes_a_busy_websocket(launch: Launch) -> None:
    running = await launch(session={"idle_ttl_seconds": 3, "absolute_ttl_seconds": 3})
    await signed_in(running)
    ws = await opened(running)
    started = time.monotonic()
    while time.monotonic() - started < 6:  # busy all along: only the absolute end stops it
        await ws.send_str("ping")
        message = await ws.receive(timeout=5)
        if message.type != WSMsgType.TEXT:
            break
        await asyncio.sleep(0.2)
    assert message.type == WSMsgType.CLOSE
    assert (ws.close_code, message.extra) == (1008, "session expired")


async def test_an_api_clients_websocket_ends_with_its_token(launch: Launch, idp: Any) -> None:
    running = await launch(api={"audiences": GATEWAY_API})
    token = idp.issue_access_token("alice", scope=f"{GATEWAY_API}/access", lifetime=2)
    ws = await opened(running, headers={"Authorization": f"Bearer {token}"})
    assert await echoes(ws)
    assert await closing(ws, seconds=5.0) == (1008, "token expired")


# ---- limits: idle timeout, heartbeat, caps, open deadline, message size ----


async def test_the_default_cap_is_64_sockets_per_user(gateway: Running) -> None:
    await signed_in(gateway)
    held = [await opened(gateway) for _ in range(64)]
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
    ws = await opened(running)
    # Pings are answered all along, yet they are not traffic: 1001 once nothing else passed.
    assert await closing(ws, seconds=4.0) == (1001, "idle timeout")


async def test_messages_keep_a_websocket_from_idling_out(launch: Launch) -> None:
    running = await launch(proxy={"websocket_idle_timeout_seconds": 1.0})
    await signed_in(running)
    ws = await opened(running)
    assert await chatting(ws, seconds=2.5)
    assert await closing(ws, seconds=4.0) == (1001, "idle timeout")


async def test_the_gateway_pings_the_client(launch: Launch) -> None:
    running = await launch(proxy={"websocket_heartbeat_seconds": 0.3})
    await signed_in(running)
    ws = await opened(running, autoping=False)
    message = await ws.receive(timeout=3)
    assert message.type == WSMsgType.PING
    await ws.close()


async def test_a_client_that_stops_answering_pings_is_dropped(launch: Launch) -> None:
    running = await launch(proxy={"websocket_heartbeat_seconds": 0.3})
    await signed_in(running)
    ws = await opened(running, autoping=False)  # and never answers
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
    first, second = await opened(running), await opened(running)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await running.browser.session.ws_connect(running.url + "/_ws")
    assert refused.value.status == 429
    assert audited(caplog, "websocket_refused")
    bob = Browser(running.url, "https://app.test", idp_ssl(idp.ca_path))
    try:
        assert (await bob.sign_in("/", "bob")).status == 302
        assert await echoes(await opened(running, bob))  # another user: a cap of his own
    finally:
        await bob.close()
    await first.close()
    for _ in range(50):  # the slot comes free once the gateway has seen the close
        try:
            third = await opened(running)
            break
        except aiohttp.WSServerHandshakeError:
            await asyncio.sleep(0.05)
    else:
        raise AssertionError("the closed socket's place was not given back")
    assert await echoes(third) and await echoes(second)


async def test_every_connection_slot_taken_is_503_at_once(launch: Launch) -> None:
    running = await launch(proxy={"max_connections": 2})
    await signed_in(running)
    held = [await opened(running), await opened(running)]
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with asyncio.timeout(2):  # not queued behind sockets that may run for hours
            await running.browser.session.ws_connect(running.url + "/_ws")
    assert refused.value.status == 503
    assert (await running.browser.get("/x", headers=API)).status == 200  # HTTP has its own pool
    for ws in held:
        assert await echoes(ws)


async def test_an_application_slow_to_accept_is_504(launch: Launch) -> None:
    running = await launch(proxy={"websocket_open_timeout_seconds": 0.5})
    await signed_in(running)
    started = time.monotonic()
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await running.browser.session.ws_connect(running.url + "/_ws_stall?seconds=3")
    assert refused.value.status == 504
    assert time.monotonic() - started < 2.5
    assert await echoes(await opened(running, path="/_ws_stall?seconds=0.1"))


@pytest.mark.parametrize("size", [64 * KIB, 64 * KIB - 1, 1])
async def test_a_message_up_to_the_limit_passes(launch: Launch, size: int) -> None:
    running = await launch(proxy={"websocket_max_message_bytes": 64 * KIB})
    await signed_in(running)
    ws = await opened(running)
    payload = secrets.token_bytes(size)
    await ws.send_bytes(payload)
    assert (await ws.receive(timeout=5)).data == payload[::-1]
    await ws.send_str(f"big:{size}")
    assert len((await ws.receive(timeout=5)).data) == size
    await ws.close()


async def test_a_message_over_the_limit_from_the_client_closes_1009_with_a_warning(
    launch: Launch, caplog: pytest.LogCaptureFixture
) -> None:
    running = await launch(proxy={"websocket_max_message_bytes": 64 * KIB})
    await signed_in(running)
    ws = await opened(running)
    await ws.send_bytes(b"x" * (64 * KIB + 1))
    code, _ = await closing(ws)
    assert code == 1009
    [warning] = [r for r in caplog.records if "MAX_MESSAGE_BYTES" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "from the client" in warning.getMessage() and "65536" in warning.getMessage()


async def test_a_message_over_the_limit_from_the_application_closes_1009_with_a_warning(
    launch: Launch, caplog: pytest.LogCaptureFixture
) -> None:
    running = await launch(proxy={"websocket_max_message_bytes": 64 * KIB})
    await signed_in(running)
    ws = await opened(running)
    await ws.send_str(f"big:{64 * KIB + 1}")
    code, _ = await closing(ws)
    assert code == 1009
    [warning] = [r for r in caplog.records if "MAX_MESSAGE_BYTES" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "from the application" in warning.getMessage()


async def test_the_default_limit_is_4_mib(
    gateway: Running, caplog: pytest.LogCaptureFixture
) -> None:
    await signed_in(gateway)
    ws = await opened(gateway)
    payload = secrets.token_bytes(4 * MIB)
    await ws.send_bytes(payload)
    assert (await ws.receive(timeout=10)).data == payload[::-1]
    await ws.send_bytes(b"x" * (5 * MIB))
    code, _ = await closing(ws, seconds=10)
    assert code == 1009
    [warning] = [r for r in caplog.records if "MAX_MESSAGE_BYTES" in r.getMessage()]
    assert "(4194304)" in warning.getMessage()
