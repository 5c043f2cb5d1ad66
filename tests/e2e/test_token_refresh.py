"""Tokens that stay right across replicas: single-flight refresh over several gateway processes
sharing Redis under strict refresh-token rotation, a refresh slower than the lock's first
lifetime, a rotation by another replica, and tokens for several downstream audiences."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
from support.browser import API, Browser
from support.fixtures import Launch, signed_in
from support.gateway import (
    PUBLIC_URL,
    SESSION_COOKIE,
    GatewayProcess,
    idp_ssl,
    settings_for,
    shared_redis,
)
from support.metrics import sample, scrape
from support.ports import free_port
from support.redis_server import RedisServer
from support.threaded import ThreadedServer
from support.upstream import upstream_headers

SCOPE = "api://upstream/read"


def audience(seen: dict[str, list[str]]) -> str:
    token = seen["authorization"][0].removeprefix("Bearer ")
    return str(jwt.decode(token, options={"verify_signature": False})["aud"])


@pytest.fixture(params=[None, 0.3], ids=["lock-default", "lock-0.3s"])
async def three_replicas(
    request: pytest.FixtureRequest, idp: Any, upstream: ThreadedServer, redis_url: str
) -> AsyncIterator[list[GatewayProcess]]:
    """Three gateway processes on one Redis; with a 0.3 s lock lifetime, the refresh (slowed
    to 1.2 s) must outlive the lock's first lifetime, kept alive by renewal."""
    request.node.lock_seconds = request.param
    settings = settings_for(
        idp,
        upstream.url,
        **shared_redis(redis_url),
        scopes=SCOPE,
        tokens={"refresh_lock_seconds": request.param},
    )
    replicas = [GatewayProcess(settings) for _ in range(3)]
    try:
        for replica in replicas:
            await replica.ready()
        yield replicas
    finally:
        for replica in replicas:
            replica.stop()


@pytest.mark.threat("F-15")
async def test_one_refresh_for_100_concurrent_requests_on_three_replicas(
    three_replicas: list[GatewayProcess], idp: Any, request: pytest.FixtureRequest
) -> None:
    idp.set_strict_rotation(True)
    idp.set_lifetimes(refresh_in=1)
    browser = Browser(three_replicas[0].url, PUBLIC_URL, idp_ssl(idp.ca_path))
    try:
        assert (await browser.sign_in("/")).status == 302
        session = browser.cookie(SESSION_COOKIE)
        assert session is not None
    finally:
        await browser.close()
    idp.set_lifetimes()  # only the first token is due early; the refreshed one lives an hour
    idp.clear_log()
    await asyncio.sleep(1.2)  # the access token is now due
    if request.node.lock_seconds:
        idp.delay("token", 1.2, times=1)
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector) as client:

        async def call(i: int) -> tuple[int, str]:
            replica = three_replicas[i % 3]
            async with client.get(
                f"{replica.url}/r/{i}", headers={**API, "Cookie": f"{SESSION_COOKIE}={session}"}
            ) as response:
                if response.status != 200:
                    return response.status, ""
                return 200, upstream_headers(await response.json())["authorization"][0]

        results = await asyncio.gather(*(call(i) for i in range(100)))
        assert [status for status, _ in results] == [200] * 100
        assert len({token for _, token in results}) == 1  # everyone got the one new token
        refreshes = idp.token_requests("refresh_token")
        assert len(refreshes) == 1
        # The stored cache holds the rotated, working refresh token.
        async with client.post(
            f"{three_replicas[1].url}/.auth/refresh",
            headers={**API, "Cookie": f"{SESSION_COOKIE}={session}"},
        ) as response:
            assert response.status == 200, await response.text()
    assert len(idp.token_requests("refresh_token")) == 2


@pytest.mark.threat("F-15")
async def test_refresh_slower_than_the_lock_lifetime_stays_single(
    launch: Launch, idp: Any, redis_url: str
) -> None:
    """The lock's first lifetime is 0.3 s, the token endpoint takes 1.2 s: renewal keeps the
    other replica waiting, so there is still exactly one refresh."""
    secret = secrets.token_urlsafe(32)
    shared = {
        "session_store": "redis",
        "redis_url": redis_url,
        "cookie_secret": secret,
        "scopes": SCOPE,
        "tokens": {"refresh_lock_seconds": 0.3},
    }
    first, second = await launch(**shared), await launch(**shared)
    idp.set_strict_rotation(True)
    idp.set_lifetimes(refresh_in=1)
    await signed_in(first)
    idp.set_lifetimes()
    session = first.browser.cookie(SESSION_COOKIE)
    assert session is not None
    second.browser.jar.update_cookies({SESSION_COOKIE: session}, second.browser.jar_origin())
    idp.clear_log()
    await asyncio.sleep(1.2)
    idp.delay("token", 1.2, times=1)
    started = time.monotonic()
    answers = await asyncio.gather(
        first.browser.get("/a", headers=API),
        *(second.browser.get(f"/b/{i}", headers=API) for i in range(5)),
    )
    assert [a.status for a in answers] == [200] * 6
    assert time.monotonic() - started >= 1.2
    assert len(idp.token_requests("refresh_token")) == 1


@pytest.mark.threat("F-15")
async def test_rotation_by_another_replica_does_not_end_the_session(
    launch: Launch, idp: Any, redis_url: str, redis_server: RedisServer
) -> None:
    """Replica A's lock lapses while its refresh is in flight; replica B refreshes (rotating the
    refresh token) and A's stale refresh token is refused. A re-reads the cache, finds B's newer
    one, and the session survives with a working refresh token."""
    secret = secrets.token_urlsafe(32)
    shared = {
        "session_store": "redis",
        "redis_url": redis_url,
        "cookie_secret": secret,
        "scopes": SCOPE,
    }
    first, second = await launch(**shared), await launch(**shared)
    idp.set_strict_rotation(True)
    await signed_in(first)
    session = first.browser.cookie(SESSION_COOKIE)
    assert session is not None
    second.browser.jar.update_cookies({SESSION_COOKIE: session}, second.browser.jar_origin())
    idp.clear_log()
    idp.delay("token", 1.5, times=1)

    async def force_refresh(replica: Any) -> int:
        response = await replica.browser.session.post(replica.url + "/.auth/refresh", headers=API)
        await response.read()
        return int(response.status)

    slow = asyncio.create_task(force_refresh(first))
    await asyncio.sleep(0.4)
    keys = redis_server.command("KEYS", "gw:lock:refresh:*").decode().split("\r\n")
    [lock] = [key for key in keys if key.startswith("gw:lock:")]
    redis_server.command("DEL", lock)  # A's lock lapses (as after a long pause)
    assert await force_refresh(second) == 200
    assert await slow == 200
    grants = idp.token_requests("refresh_token")
    # B's, A's refused one (its refresh token was rotated away), A's retry with B's cache.
    assert sorted(g.status for g in grants) == [200, 200, 400]
    assert (await first.browser.get("/after", headers=API)).status == 200
    assert await force_refresh(second) == 200  # the stored refresh token still works


async def test_two_routes_get_tokens_for_two_audiences(launch: Launch, idp: Any) -> None:
    running = await launch(
        scopes=SCOPE,
        tokens={"routes": [{"path": "/reports/", "scopes": "api://reports/Read"}]},
    )
    await signed_in(running)
    idp.clear_log()
    default = upstream_headers(await (await running.browser.get("/orders", headers=API)).json())
    reports = upstream_headers(await (await running.browser.get("/reports/q1", headers=API)).json())
    again = upstream_headers(await (await running.browser.get("/reports/q2", headers=API)).json())
    assert audience(default) == "api://upstream"
    assert audience(reports) == "api://reports"
    assert reports["authorization"] == again["authorization"]  # kept in the session
    # The second audience came silently from the same refresh token, once.
    assert [r.grant_type for r in idp.token_requests()] == ["refresh_token"]


async def test_route_without_scopes_sends_no_token(launch: Launch) -> None:
    running = await launch(
        scopes=SCOPE,
        tokens={"routes": [{"path": "/static/", "methods": "GET", "scopes": ""}]},
    )
    await signed_in(running)
    plain = upstream_headers(await (await running.browser.get("/static/a.css", headers=API)).json())
    assert "authorization" not in plain
    assert "x-ms-client-principal-name" in plain


async def test_sign_out_during_a_refresh_stays_signed_out(launch: Launch, idp: Any) -> None:
    """A refresh already in flight when the user signs out must not bring the session back."""
    running = await launch(scopes=SCOPE)
    await signed_in(running)
    cookie = running.browser.cookie(SESSION_COOKIE)
    assert cookie is not None
    idp.delay("token", 1.0, times=1)

    async def force_refresh() -> int:
        response = await running.browser.session.post(running.url + "/.auth/refresh", headers=API)
        await response.read()
        return int(response.status)

    in_flight = asyncio.create_task(force_refresh())
    await asyncio.sleep(0.3)
    assert (await running.browser.get("/.auth/logout")).status == 302
    assert await in_flight == 401  # the refresh found the session gone
    running.browser.jar.update_cookies({SESSION_COOKIE: cookie}, running.browser.jar_origin())
    assert (await running.browser.get("/x", headers=API)).status == 401


@pytest.mark.threat("F-13")
async def test_provider_outage_keeps_a_still_valid_token(launch: Launch, idp: Any) -> None:
    """The token is due (skew) but the provider answers 503: requests keep the current token,
    and the gateway waits before asking again instead of calling the provider per request."""
    running = await launch(scopes=SCOPE, tokens={"refresh_skew_seconds": 3599})
    await signed_in(running)
    before = upstream_headers(await (await running.browser.get("/a", headers=API)).json())
    await asyncio.sleep(1.1)
    idp.clear_log()
    idp.fail("token", 503, {"error": "temporarily_unavailable"}, times=None)
    try:
        for i in range(4):
            answer = await running.browser.get(f"/b/{i}", headers=API)
            assert answer.status == 200
            seen = upstream_headers(await answer.json())
            assert seen["authorization"] == before["authorization"]
    finally:
        idp.clear_faults()
    assert len(idp.token_requests("refresh_token")) == 1


@pytest.mark.threat("F-13")
async def test_refused_renewal_of_a_nearly_expired_token_ends_the_session(
    launch: Launch, idp: Any
) -> None:
    """A refresh token refused (revoked) when the token has five minutes or less to go: nothing
    is kept, as MSAL would keep nothing (a refusal earlier keeps the token: test_proxy.py)."""
    idp.set_lifetimes(expires_in=302)  # due after 2 s (the default 300 s skew), 300 s left
    running = await launch(scopes=SCOPE)
    await signed_in(running)
    assert (await running.browser.get("/a", headers=API)).status == 200
    idp.revoke_refresh_tokens("alice")
    idp.clear_log()
    await asyncio.sleep(2.2)
    answer = await running.browser.get("/b", headers=API)
    assert answer.status == 401
    assert (await answer.json())["error"] == "sign_in_required"
    assert len(idp.token_requests("refresh_token")) == 1
    page = await running.browser.get("/c")  # the session is over, not merely refused once
    assert page.status == 302 and page.headers["Location"].startswith("/.auth/login/aad")
    assert len(idp.token_requests("refresh_token")) == 1


@pytest.mark.threat("F-13")
async def test_refused_renewal_within_a_long_refresh_skew_ends_the_session(
    launch: Launch, idp: Any
) -> None:
    """A renewal due because of GATEWAY_TOKENS__REFRESH_SKEW_SECONDS, not an early renewal the
    provider asked for: a refusal ends the session at once, however long the token has left."""
    running = await launch(scopes=SCOPE, tokens={"refresh_skew_seconds": 3599})
    await signed_in(running)
    assert (await running.browser.get("/a", headers=API)).status == 200
    idp.revoke_refresh_tokens("alice")
    idp.clear_log()
    await asyncio.sleep(1.1)
    assert (await running.browser.get("/b", headers=API)).status == 401
    assert (await running.browser.get("/c", headers=API)).status == 401
    assert len(idp.token_requests("refresh_token")) == 1


@pytest.mark.threat("F-13")
async def test_step_up_refused_early_renewal_keeps_the_token_for_now(
    launch: Launch, idp: Any
) -> None:
    """An early renewal (refresh_in) answered interaction_required: the token, good for an hour,
    stays in use and the renewal is retried later; nobody is sent to the provider yet."""
    idp.set_lifetimes(refresh_in=1)
    port = free_port()
    running = await launch(scopes=SCOPE, metrics_listen=f"127.0.0.1:{port}")
    await signed_in(running)
    before = upstream_headers(await (await running.browser.get("/a", headers=API)).json())
    idp.clear_log()
    idp.fail("token", 400, {"error": "interaction_required"}, times=None)
    try:
        await asyncio.sleep(1.2)
        for i in range(3):
            answer = await running.browser.get(f"/b/{i}", headers=API)
            assert answer.status == 200
            assert upstream_headers(await answer.json())["authorization"] == before["authorization"]
    finally:
        idp.clear_faults()
    assert len(idp.token_requests("refresh_token")) == 1
    text = await scrape(port)
    assert sample(text, 'msal_gateway_token_refreshes_total{outcome="kept_after_refusal"}') == 1


async def test_auth_refresh_renews_every_token_the_session_holds(launch: Launch, idp: Any) -> None:
    running = await launch(
        scopes=SCOPE, tokens={"routes": [{"path": "/reports/", "scopes": "api://reports/Read"}]}
    )
    await signed_in(running)
    await (await running.browser.get("/reports/a", headers=API)).read()
    idp.clear_log()
    response = await running.browser.session.post(running.url + "/.auth/refresh", headers=API)
    body = await response.json()
    assert response.status == 200
    assert sorted(token["scopes"] for token in body["tokens"]) == ["api://reports/Read", SCOPE]
    assert len(idp.token_requests("refresh_token")) == 2
