"""A Storage that counts and times every operation of the store it wraps (F-03: operators must see
a slow or failing store before users do). app.py wraps whichever backend it built.

Metric children are bound once here, so an operation costs two clock reads and two updates.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypeVar

from prometheus_client.metrics import Counter, Histogram

from gateway.errors import StoreUnavailable
from gateway.store.storage import Storage
from gateway.telemetry.metrics import STORE_OPERATIONS, Metrics

T = TypeVar("T")


class _Operation:
    __slots__ = ("duration", "failed", "succeeded")

    def __init__(self, metrics: Metrics, name: str) -> None:
        self.succeeded: Counter = metrics.store_operations.labels(name, "ok")
        self.failed: Counter = metrics.store_operations.labels(name, "error")
        self.duration: Histogram = metrics.store_duration.labels(name)

    async def run(self, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            result = await call
        except StoreUnavailable:
            self.failed.inc()
            raise
        finally:
            self.duration.observe(time.perf_counter() - started)
        self.succeeded.inc()
        return result


class MeasuredStorage:
    """Storage, with every call counted by outcome and timed."""

    def __init__(self, inner: Storage, metrics: Metrics) -> None:
        self.inner = inner
        self._ops = {name: _Operation(metrics, name) for name in STORE_OPERATIONS}

    async def get(self, key: str, *, slide_ttl: float | None = None) -> bytes | None:
        return await self._ops["get"].run(self.inner.get(key, slide_ttl=slide_ttl))

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self._ops["set"].run(self.inner.set(key, value, ttl))

    async def replace(self, key: str, expected: bytes | None, value: bytes, ttl: float) -> bool:
        return await self._ops["replace"].run(self.inner.replace(key, expected, value, ttl))

    async def take(self, key: str) -> bytes | None:
        return await self._ops["take"].run(self.inner.take(key))

    async def delete(self, *keys: str) -> None:
        await self._ops["delete"].run(self.inner.delete(*keys))

    async def ping(self) -> None:
        await self._ops["ping"].run(self.inner.ping())

    def lock(self, name: str, ttl: float, wait: float) -> AbstractAsyncContextManager[None]:
        return self._measured_lock(name, ttl, wait)

    @asynccontextmanager
    async def _measured_lock(self, name: str, ttl: float, wait: float) -> AsyncIterator[None]:
        operation = self._ops["lock"]
        held = self.inner.lock(name, ttl, wait)
        await operation.run(held.__aenter__())
        try:
            yield
        except BaseException as exc:
            if not await held.__aexit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            await held.__aexit__(None, None, None)

    async def close(self) -> None:
        await self.inner.close()
