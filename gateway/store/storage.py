"""The byte store every record kind is kept in: a Protocol with an in-memory and a Redis backend.

Records (sessions, pending sign-ins, token caches) are sealed bytes under string keys with a TTL;
this layer knows nothing about what they mean or about HTTP. Backends translate their own failures
into StoreUnavailable. The one contract test suite (tests/contract/test_storage.py) runs against
both.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol


class Clock(Protocol):
    def __call__(self) -> float: ...


class Storage(Protocol):
    """Bytes under keys, each with its own time to live (seconds)."""

    async def get(self, key: str, *, slide_ttl: float | None = None) -> bytes | None:
        """The value, or None. With `slide_ttl`, the key's TTL restarts at that value in the same
        round trip (Redis GETEX)."""

    async def set(self, key: str, value: bytes, ttl: float) -> None: ...

    async def replace(self, key: str, expected: bytes | None, value: bytes, ttl: float) -> bool:
        """Set `value` only if the key still holds `expected` (None: the key is absent);
        whether it was set. A writer whose view is stale cannot overwrite a newer value."""

    async def take(self, key: str) -> bytes | None:
        """Read and delete atomically (single-use records): at most one caller gets the value."""

    async def delete(self, *keys: str) -> None: ...

    async def ping(self) -> None:
        """Return when the store answers; raise StoreUnavailable otherwise."""

    def lock(self, name: str, ttl: float, wait: float) -> AbstractAsyncContextManager[None]:
        """Mutual exclusion for `name` across every process sharing the store.

        Held until the block exits, renewed while it runs; `ttl` bounds how long a crashed holder
        can block others. Raises Busy if the lock is not free within `wait` seconds,
        StoreUnavailable if the store cannot be reached.
        """

    async def close(self) -> None: ...


class Notices(Protocol):
    """Short messages to every process sharing the store (Redis pub/sub): "this key changed"."""

    async def publish(self, message: str) -> None:
        """Send to every follower; StoreUnavailable if the store cannot be reached."""

    async def follow(
        self, on_notice: Callable[[str], None], on_state: Callable[[bool], None]
    ) -> None:
        """Run until cancelled, reconnecting as needed: on_state(True) once the subscription is
        confirmed, on_notice for each message, on_state(False) as soon as the feed is lost or
        falls silent (notices may be missed from then on)."""
