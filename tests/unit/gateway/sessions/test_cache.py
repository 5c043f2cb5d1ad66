"""The in-process session cache (gateway.sessions.cache): what it keeps and for how long, that it
serves nothing while its notice feed is unconfirmed, and that concurrent misses read the store
once. How sign-out and revocation reach another replica's copy is in
tests/e2e/test_session_cache.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gateway.sessions.cache import SessionCache
from gateway.sessions.sealing import Sealer
from gateway.sessions.store import SessionRecord, SessionStore
from gateway.store.measured import MeasuredStorage
from gateway.store.memory import MemoryStorage
from gateway.telemetry.metrics import Metrics


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


async def test_in_front_of_the_memory_store_every_change_here_reaches_the_copy() -> None:
    """One process, no feed: the copy serves at once, and a save or a delete made through the
    store drops it, so nothing stale is ever served (the feed-less cache of the memory store)."""
    storage = MeasuredStorage(MemoryStorage(), Metrics())
    cache: SessionCache[SessionRecord] = SessionCache.for_one_process(5.0, 100)
    sessions = SessionStore(storage, Sealer(b"k" * 32), 3600, time.time, cache=cache)
    now = time.time()
    session_id = "s" * 43
    first = SessionRecord("u", "h", {"oid": "u", "name": "A"}, now, now + 3600)
    await sessions.save(session_id, first)
    assert await sessions.load(session_id) == first
    assert len(cache) == 1
    assert await sessions.load(session_id) is await sessions.load(session_id)  # the copy
    second = SessionRecord("u", "h", {"oid": "u", "name": "B"}, now, now + 3600)
    await sessions.save(session_id, second)
    assert await sessions.load(session_id) == second
    await sessions.delete(session_id)
    assert await sessions.load(session_id) is None
    with pytest.raises(AssertionError):
        cache.feed_changed(False)  # there is no feed to lose


def test_a_cache_without_notices_is_refused_in_front_of_a_shared_store() -> None:
    cache: SessionCache[SessionRecord] = SessionCache(5.0, 100)
    with pytest.raises(AssertionError, match="notices"):
        SessionStore(MemoryStorage(), Sealer(b"k" * 32), 3600, time.time, cache=cache)
