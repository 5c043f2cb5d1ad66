"""Gateway processes (`python -m gateway serve`) sharing one real Redis: sign-ins that cross
replicas, a Redis outage and its recovery, and what a Redis dump reveals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from support.browser import API, Browser
from support.gateway import (
    PUBLIC_URL,
    SESSION_COOKIE,
    GatewayProcess,
    idp_ssl,
    settings_for,
    shared_redis,
)
from support.redis_server import RedisServer
from support.threaded import ThreadedServer
from support.upstream import upstream_headers


@pytest.fixture
async def replicas(
    idp: Any, upstream: ThreadedServer, redis_url: str
) -> AsyncIterator[tuple[GatewayProcess, GatewayProcess]]:
    settings = settings_for(
        idp,
        upstream.url,
        **shared_redis(redis_url),
        scopes="api://upstream/read",
    )
    first, second = GatewayProcess(settings), GatewayProcess(settings)
    try:
        await first.ready()
        await second.ready()
        yield first, second
    finally:
        for replica in (first, second):
            log = replica.stop()
            assert replica.returncode == 0, log  # SIGTERM is a clean shutdown
            assert "Traceback" not in log


async def test_sign_in_started_on_one_replica_finishes_on_the_other(
    replicas: tuple[GatewayProcess, GatewayProcess], idp: Any, redis_server: RedisServer
) -> None:
    first, second = replicas
    on_first = Browser(first.url, PUBLIC_URL, idp_ssl(idp.ca_path))
    on_second = Browser(second.url, PUBLIC_URL, idp_ssl(idp.ca_path))
    try:
        auth = await on_first.authorize(await on_first.start_sign_in("/start"))
        # The same browser, its callback load-balanced to the other replica.
        for cookie in on_first.jar:
            on_second.jar.update_cookies({cookie.key: cookie.value}, on_second.jar_origin())
        response = await on_second.deliver(auth)
        assert response.status == 302
        assert response.headers["Location"] == "/start"
        session = on_second.cookie(SESSION_COOKIE)
        assert session is not None
        on_first.jar.update_cookies({SESSION_COOKIE: session}, on_first.jar_origin())
        for browser in (on_first, on_second):
            answer = await browser.get("/whoami", headers=API)
            assert answer.status == 200
            seen = upstream_headers(await answer.json())
            assert seen["x-ms-client-principal-name"] == ["alice@contoso.example"]
            assert seen["authorization"][0].startswith("Bearer ")
        # Sign out on one replica: the session is gone on both.
        await on_first.get("/.auth/logout")
        on_second.jar.clear()
        on_second.jar.update_cookies({SESSION_COOKIE: session}, on_second.jar_origin())
        assert (await on_second.get("/whoami", headers=API)).status == 401
    finally:
        await on_first.close()
        await on_second.close()


@pytest.mark.threat("RS-03")
async def test_redis_dump_reveals_no_secret(
    replicas: tuple[GatewayProcess, GatewayProcess], idp: Any, redis_server: RedisServer
) -> None:
    first, _ = replicas
    browser = Browser(first.url, PUBLIC_URL, idp_ssl(idp.ca_path))
    try:
        assert (await browser.sign_in("/")).status == 302
        session = browser.cookie(SESSION_COOKIE)
        assert session is not None
    finally:
        await browser.close()
    keys = redis_server.command("KEYS", "*").decode(errors="replace")
    assert "gw:session:" in keys and "gw:tokens:" in keys
    assert session not in keys  # keys are digests of the session id, never the id
    for key in [line for line in keys.split("\r\n") if line.startswith("gw:")]:
        value = redis_server.command("GET", key)
        for secret_text in (b"alice", b"refresh", b"access_token", b"eyJ", session.encode()):
            assert secret_text not in value, (key, secret_text)


async def test_redis_outage_is_503_then_recovers(idp: Any, upstream: ThreadedServer) -> None:
    server = RedisServer().start()
    settings = settings_for(
        idp,
        upstream.url,
        **shared_redis(server.url),
        redis={"socket_timeout_seconds": 0.5, "connect_timeout_seconds": 0.5},
    )
    gateway = GatewayProcess(settings)
    browser = Browser(gateway.url, PUBLIC_URL, idp_ssl(idp.ca_path))
    try:
        await gateway.ready()
        assert (await browser.sign_in("/")).status == 302
        assert (await browser.get("/x", headers=API)).status == 200
        server.stop()
        await asyncio.sleep(0.2)  # the session cache drops its copies once its notice feed drops
        during = await browser.get("/x", headers=API)
        assert during.status == 503
        assert (await during.json())["error"] == "store_unavailable"
        page = await browser.get("/x")
        assert page.status == 503  # never a redirect to sign-in: the user is not signed out
        logout = await browser.get("/.auth/logout")
        assert logout.status == 503  # the record could not be deleted ...
        assert browser.cookie(SESSION_COOKIE) in (None, "")  # ... but the cookie is gone
        async with aiohttp.ClientSession() as probe:
            async with probe.get(gateway.url + "/.auth/readyz") as ready:
                assert ready.status == 503
                assert (await ready.json())["checks"]["store"] == "unreachable"
            server.start()
            async with probe.get(gateway.url + "/.auth/readyz") as ready:
                assert ready.status == 200
        # Redis kept nothing on disk, so the session is gone: a clean sign-in, not an error.
        assert (await browser.get("/x", headers=API)).status == 401
        assert (await browser.sign_in("/again")).status == 302
        assert (await browser.get("/x", headers=API)).status == 200
    finally:
        await browser.close()
        gateway.stop()
        server.cleanup()
