"""A short list of ids kept sealed under one store key, appended to by many replicas at once.

Appends use compare-and-set, so concurrent writers do not lose each other's entries; the list is
bounded, and what falls off the front is returned so the caller can act on it (end that session,
drop that pending sign-in). Used for the session index and the per-browser sign-in cap.
"""

from __future__ import annotations

import json
from typing import Final

from gateway.errors import StoreUnavailable
from gateway.sessions.sealing import Sealer
from gateway.store.storage import Storage

MAX_ATTEMPTS: Final = 5


class SealedList:
    def __init__(self, storage: Storage, sealer: Sealer) -> None:
        self._storage = storage
        self._sealer = sealer

    def _open(self, key: str, stored: bytes | None) -> list[str]:
        if stored is None:
            return []
        items = json.loads(self._sealer.open(key, stored))
        return [str(item) for item in items] if isinstance(items, list) else []

    async def append(self, key: str, item: str, *, ttl: float, limit: int) -> list[str]:
        """Add `item` at the end; return the items dropped from the front to stay within
        `limit`. StoreUnavailable after five lost races in a row: the item is not added, and the
        caller must not go on as if it were (an unindexed session could not be revoked)."""
        for _ in range(MAX_ATTEMPTS):
            stored = await self._storage.get(key)
            items = [*self._open(key, stored), item]
            dropped, kept = items[: max(0, len(items) - limit)], items[-limit:]
            sealed = self._sealer.seal(key, json.dumps(kept).encode())
            if await self._storage.replace(key, stored, sealed, ttl):
                return dropped
        raise StoreUnavailable("a shared list kept changing; please try again")

    async def take(self, key: str) -> list[str]:
        """Every item, and the list removed."""
        return self._open(key, await self._storage.take(key))
