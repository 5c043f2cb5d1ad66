"""The session cache across replicas: two in-process gateways sharing a real Redis, where a cached
session costs no store read, and sign-out, revocation and a lost notice feed reach the other
replica's copy."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from support.browser import API
from support.fixtures import Launch, Running, share_session, signed_in
from support.gateway import shared_redis
from support.idp import ALICE_OID
from support.metrics import sample, scrape
from support.ports import free_port
from support.redis_server import RedisServer

from gateway.keys import SESSIONS

GETS = 'msal_gateway_store_operations_total{operation="get",outcome="ok"}'
ADMIN_TOKEN = secrets.token_urlsafe(32)
# Long enough that only a notice (never ageing) can explain a copy disappearing within a test.
CACHE_SECONDS = 60.0


async def replicas(launch: Launch, redis_url: str, **extra: Any) -> tuple[Running, Running]:
    shared = {
        **shared_redis(redis_url),
        "session": {"cache_seconds": CACHE_SECONDS},
        **extra,
    }
    first = await launch(**shared, metrics_listen=f"127.0.0.1:{free_port()}")
    second = await launch(**shared, metrics_listen=f"127.0.0.1:{free_port()}")
    for running in (first, second):
        await until(lambda r=running: _following(r), "the notice feed is up")
    return first, second


def _following(running: Running) -> bool:
    cache = running.app[SESSIONS].cache
    assert cache is not None
    return cache.following


async def until(check: Any, what: str, seconds: float = 3.0) -> float:
    """Poll `check` (sync or async) until true; how long it took."""
    started = time.monotonic()
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not within {seconds}s: {what}")
        await asyncio.sleep(0.01)


def metrics_port(running: Running) -> int:
    assert running.settings.metrics_listen is not None
    return int(running.settings.metrics_listen.rpartition(":")[2])


async def refused(running: Running) -> bool:
    return (await running.browser.get("/x", headers=API)).status == 401


async def test_a_cached_session_costs_no_store_read(launch: Launch, redis_url: str) -> None:
    first, second = await replicas(launch, redis_url)
    await signed_in(first)
    await share_session(first, second)
    assert (await second.browser.get("/x", headers=API)).status == 200
    reads = sample(await scrape(metrics_port(second)), GETS)
    for _ in range(20):
        assert (await second.browser.get("/x", headers=API)).status == 200
    assert sample(await scrape(metrics_port(second)), GETS) == reads


async def test_sign_out_on_one_replica_ends_the_cached_copy_on_the_other(
    launch: Launch, redis_url: str
) -> None:
    first, second = await replicas(launch, redis_url)
    await signed_in(first)
    await share_session(first, second)
    assert (await second.browser.get("/x", headers=API)).status == 200  # now cached there
    await first.browser.get("/.auth/logout")
    took = await until(lambda: refused(second), "the other replica refuses the session", 1.0)
    print(f"\nsign-out reached the other replica's cache after {took * 1000:.1f} ms")


async def test_revocation_ends_cached_copies_everywhere(launch: Launch, redis_url: str) -> None:
    first, second = await replicas(launch, redis_url, admin={"token": ADMIN_TOKEN})
    await signed_in(first, user="alice")
    await share_session(first, second)
    for running in (first, second):
        assert (await running.browser.get("/x", headers=API)).status == 200
    done = await first.browser.session.post(
        first.url + "/.auth/admin/revoke",
        json={"user": ALICE_OID},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert (await done.json()) == {"revoked": 1}
    assert await refused(first)
    await until(lambda: refused(second), "the other replica refuses the revoked session", 1.0)


async def test_a_lost_feed_empties_the_cache_and_recovers(
    launch: Launch, redis_server: RedisServer, redis_url: str
) -> None:
    first, second = await replicas(launch, redis_url)
    await signed_in(first)
    await share_session(first, second)
    assert (await second.browser.get("/x", headers=API)).status == 200
    cache = second.app[SESSIONS].cache
    assert cache is not None and len(cache) == 1
    # Every subscriber's connection dropped: notices sent now would reach nobody.
    redis_server.command("CLIENT", "KILL", "TYPE", "pubsub")
    await until(lambda: len(cache) == 0, "the cache is emptied when its feed is lost", 1.0)
    await first.browser.get("/.auth/logout")
    assert await refused(second)  # read from the store, not from a copy nobody could void
    await until(lambda: _following(second), "the feed is followed again")
