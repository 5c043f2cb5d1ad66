"""Each session's MSAL token cache (it holds refresh tokens), sealed beside the session record.

Read only on the sign-in and refresh paths, never on a normal proxied request. Written only when
MSAL reports a change. Deleted with the session.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from gateway.errors import CorruptRecordError
from gateway.sessions.sealing import Sealer
from gateway.store.storage import Storage

TOKENS_PREFIX: Final = "gw:tokens:"
LOCK_PREFIX: Final = "gw:lock:refresh:"


@dataclass(frozen=True, slots=True)
class StoredCache:
    """A token cache as loaded: the serialized MSAL cache, and the exact stored bytes that a
    later compare-and-set write must still find."""

    serialized: str
    stored: bytes


class TokenCacheStore:
    def __init__(self, storage: Storage, sealer: Sealer) -> None:
        self._storage = storage
        self._sealer = sealer

    def _key(self, session_id: str) -> str:
        return TOKENS_PREFIX + self._sealer.digest(session_id)

    def lock_name(self, session_id: str) -> str:
        return LOCK_PREFIX + self._sealer.digest(session_id)

    async def load(self, session_id: str) -> StoredCache | None:
        """The stored cache, or None. CorruptRecordError when it will not open."""
        key = self._key(session_id)
        sealed = await self._storage.get(key)
        if sealed is None:
            return None
        serialized = self._sealer.open(key, sealed).decode()
        try:
            shaped = isinstance(json.loads(serialized), dict)
        except ValueError:
            shaped = False
        if not shaped:  # MSAL would fail on it in a worker thread, as an unexpected error
            raise CorruptRecordError(f"token cache under {key} is not an MSAL cache")
        return StoredCache(serialized, sealed)

    async def save(self, session_id: str, serialized: str, ttl: float) -> None:
        key = self._key(session_id)
        if ttl > 0:
            await self._storage.set(key, self._sealer.seal(key, serialized.encode()), ttl)

    async def replace(
        self, session_id: str, previous: StoredCache, serialized: str, ttl: float
    ) -> bool:
        """Write `serialized` only if the store still holds `previous`; whether it was written."""
        key = self._key(session_id)
        if ttl <= 0:
            return False
        sealed = self._sealer.seal(key, serialized.encode())
        return await self._storage.replace(key, previous.stored, sealed, ttl)

    async def delete(self, session_id: str) -> None:
        await self._storage.delete(self._key(session_id))
