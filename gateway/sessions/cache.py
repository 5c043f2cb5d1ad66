"""This process's short-lived copy of recently read session records (GATEWAY_SESSION__CACHE_*).

A known session costs one store round trip, an AES-GCM open and a JSON decode per request; most
requests of a busy session can skip all three. Staleness is bounded twice over:
- an entry is used for at most `ttl` seconds after it was read from the store;
- every write, sign-out and revocation on any replica publishes a notice (Redis pub/sub) that drops
  the entry everywhere. While the notice feed is down, or before it is first confirmed, the cache
  is bypassed and emptied, since notices may have been missed.
So a revoked session stops working on every replica within milliseconds while the feed is up, and
within `ttl` seconds in the worst case (a notice lost on a connection that died silently).

A read that was in flight while a notice arrived is not cached: its answer may predate the change.

In front of the memory store (`for_one_process`) there is no feed and nothing to miss: that store
lives in this one process, so every change to a record is made by this process's SessionStore,
which drops its copy at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class SessionCache(Generic[V]):
    """Values by store key, each trusted for `ttl` seconds; at most `max_entries` of them."""

    def __init__(
        self, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[float, V]] = {}
        self._generation = 0  # bumped by every notice: reads that straddle one are not kept
        self.following = False  # the notice feed is confirmed up
        self.local = False  # in front of a store no other process writes (for_one_process)

    @classmethod
    def for_one_process(
        cls, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> SessionCache[V]:
        """A cache in front of a store that only this process writes: no notice feed to follow."""
        cache = cls(ttl, max_entries, clock)
        cache.following = cache.local = True
        return cache

    @property
    def max_entries(self) -> int:
        return self._max

    def __len__(self) -> int:
        return len(self._entries)

    def generation(self) -> int:
        return self._generation

    def get(self, key: str) -> V | None:
        if not self.following:
            return None
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() - entry[0] >= self._ttl:
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: str, value: V, generation: int) -> None:
        """Keep `value`, read from the store when generation() was `generation`."""
        if not self.following or generation != self._generation:
            return
        entries = self._entries
        entries.pop(key, None)
        now = self._clock()
        # Entries are in the order they were read, so the expired ones are at the front: drop a
        # few with each insertion, and the cache holds about the sessions of the last ttl seconds.
        for _ in range(2):
            oldest = next(iter(entries), None)
            if oldest is None or now - entries[oldest][0] < self._ttl:
                break
            del entries[oldest]
        if len(entries) >= self._max:
            del entries[next(iter(entries))]  # the oldest read
        entries[key] = (now, value)

    def drop(self, key: str) -> None:
        self._generation += 1
        self._entries.pop(key, None)

    def feed_changed(self, following: bool) -> None:
        """The notice feed went up or down: either way, notices may have been missed."""
        assert not self.local, "a cache for one process follows no feed"
        self._generation += 1
        self._entries.clear()
        self.following = following
