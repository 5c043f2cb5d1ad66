"""The in-process session cache: what it keeps, for how long, and how sign-out, revocation and a
lost notice feed reach every replica's copy (two gateways sharing a real Redis)."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import pytest
from support.browser import API
from support.fixtures import Launch, Running, signed_in
from support.gateway import shared_redis
from support.idp import ALICE_OID
from support.metrics import sample, scrape
from support.ports import free_port
from support.redis_server import RedisServer

from gateway.keys import SESSIONS
from gateway.sessions.cache import SessionCache
from gateway.sessions.sealing import Sealer
from gateway.sessions.store import SessionRecord, SessionStore
from gateway.store.measured import MeasuredStorage
from gateway.store.memory import MemoryStorage
from gateway.telemetry.metrics import Metrics

ADMIN_TOKEN = secrets.token_urlsafe(32)
# Long enough that only a notice (never ageing) can explain a copy disappearing within a test.
CACHE_SECONDS = 60.0
GETS = 'msal_gateway_store_operations_total{operation="get",outcome="ok"}'


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def following(ttl: float = 5.0, max_entries: int = 10) -> tuple[SessionCache[str], Clock]:
    clock = Clock()
    cache: SessionCache[str] = SessionCache(ttl, max_entries, clock)
    cache.feed_changed(True)
    return cache, clock


def test_an_entry_is_trusted_for_the_ttl_only() -> None:
    cache, clock = following(ttl=5.0)
    cache.put("k", "v", cache.generation())
    clock.now += 4.9
    assert cache.get("k") == "v"
    clock.now += 0.1
    assert cache.get("k") is None
    assert len(cache) == 0


def test_nothing_is_cached_or_served_unless_the_feed_is_confirmed() -> None:
    cache: SessionCache[str] = SessionCache(5.0, 10, Clock())
    cache.put("k", "v", cache.generation())
    assert cache.get("k") is None and len(cache) == 0
    cache.feed_changed(True)
    cache.put("k", "v", cache.generation())
    assert cache.get("k") == "v"
    cache.feed_changed(False)  # lost: everything read so far may be stale
    assert cache.get("k") is None and len(cache) == 0


@pytest.mark.parametrize("event", ["notice for another key", "feed lost and back"])
def test_a_read_that_straddles_a_change_is_not_kept(event: str) -> None:
    cache, _ = following()
    before = cache.generation()  # a store read starts ...
    if event == "notice for another key":
        cache.drop("other")  # notices are not matched by key: any change voids reads in flight
    else:
        cache.feed_changed(False)
        cache.feed_changed(True)
    cache.put("k", "old", before)  # ... and ends after the change
    assert cache.get("k") is None


def test_the_oldest_read_is_evicted_at_the_bound() -> None:
    cache, _ = following(max_entries=3)
    for key in "abcd":
        cache.put(key, key.upper(), cache.generation())
    assert len(cache) == 3
    assert cache.get("a") is None
    assert [cache.get(key) for key in "bcd"] == ["B", "C", "D"]


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


async def share_session(source: Running, target: Running) -> None:
    cookie = source.settings.session_cookie_name
    value = source.browser.cookie(cookie)
    assert value is not None
    target.browser.jar.clear()
    target.browser.jar.update_cookies({cookie: value}, target.browser.jar_origin())


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


def test_expired_entries_are_dropped_as_new_ones_arrive() -> None:
    cache, clock = following(ttl=5.0, max_entries=1000)
    for key in "abc":
        cache.put(key, key, cache.generation())
    clock.now += 6.0  # a, b and c have aged out but nobody asked for them again
    cache.put("d", "d", cache.generation())
    cache.put("e", "e", cache.generation())
    assert len(cache) == 2  # two puts, up to two expired entries dropped each
    assert cache.get("d") == "d"


class _Quiet:
    """Notices that go nowhere: one process, nobody else to tell (enough for this test)."""

    async def publish(self, message: str) -> None:
        return None

    async def follow(self, on_notice: Any, on_state: Any) -> None:
        return None


class _SlowReads(MemoryStorage):
    """Reads take a moment, as over a network: concurrent readers overlap."""

    async def get(self, key: str, *, slide_ttl: float | None = None) -> bytes | None:
        await asyncio.sleep(0.02)
        return await super().get(key, slide_ttl=slide_ttl)


async def test_concurrent_misses_for_one_session_read_the_store_once() -> None:
    metrics = Metrics()
    storage = MeasuredStorage(_SlowReads(), metrics)
    cache: SessionCache[SessionRecord] = SessionCache(5.0, 100)
    cache.feed_changed(True)
    sessions = SessionStore(
        storage, Sealer(b"k" * 32), 3600, time.time, cache=cache, notices=_Quiet()
    )
    now = time.time()
    record = SessionRecord("u", "h", {"oid": "u"}, now, now + 3600)
    await sessions.save("s" * 43, record)  # a save drops the copy: the next read is a miss

    def gets() -> float:
        labels = {"operation": "get", "outcome": "ok"}
        value = metrics.registry.get_sample_value("msal_gateway_store_operations_total", labels)
        return value or 0.0

    loaded = await asyncio.gather(*(sessions.load("s" * 43) for _ in range(50)))
    assert all(one == record for one in loaded)
    assert gets() == 1
