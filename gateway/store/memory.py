"""The in-memory Storage backend: the embedded default for one replica, the demo and development.

Data dies with the process. Expiry follows the injected clock; expired entries are dropped on
access and by a periodic sweep, so memory is bounded by live records. Locks are per-key asyncio
locks, which is enough because this store implies a single process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gateway.errors import Busy
from gateway.store.storage import Clock

SWEEP_INTERVAL_SECONDS = 60.0


class MemoryStorage:
    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._items: dict[str, tuple[bytes, float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._waiters: dict[str, int] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def start_sweeping(self, interval: float = SWEEP_INTERVAL_SECONDS) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever(interval))

    async def _sweep_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.sweep()

    def sweep(self) -> int:
        """Drop every expired entry; return how many were dropped."""
        now = self._clock()
        expired = [key for key, (_, expires_at) in self._items.items() if expires_at <= now]
        for key in expired:
            del self._items[key]
        return len(expired)

    def __len__(self) -> int:
        return len(self._items)

    def _live(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            del self._items[key]
            return None
        return item[0]

    async def get(self, key: str, *, slide_ttl: float | None = None) -> bytes | None:
        value = self._live(key)
        if value is not None and slide_ttl is not None:
            self._items[key] = (value, self._clock() + slide_ttl)
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self._items[key] = (value, self._clock() + ttl)

    async def replace(self, key: str, expected: bytes | None, value: bytes, ttl: float) -> bool:
        if self._live(key) != expected:
            return False
        self._items[key] = (value, self._clock() + ttl)
        return True

    async def take(self, key: str) -> bytes | None:
        value = self._live(key)
        self._items.pop(key, None)
        return value

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._items.pop(key, None)

    async def ping(self) -> None:
        return None

    @asynccontextmanager
    async def lock(self, name: str, ttl: float, wait: float) -> AsyncIterator[None]:
        lock = self._locks.setdefault(name, asyncio.Lock())
        self._waiters[name] = self._waiters.get(name, 0) + 1
        try:
            try:
                await asyncio.wait_for(lock.acquire(), wait)
            except TimeoutError as exc:
                raise Busy(f"lock {name} is still held after {wait:.1f}s") from exc
            try:
                yield
            finally:
                lock.release()
        finally:
            self._waiters[name] -= 1
            if not self._waiters[name]:
                # Nobody else holds or waits: forget the lock so the table stays bounded.
                del self._waiters[name]
                del self._locks[name]

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
