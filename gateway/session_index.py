"""Which sessions belong to a user or to an identity-provider sign-in session (`sid`), so that a
logout or a revocation reaches all of them on every replica.

Each index entry is a sealed list of session ids under a keyed digest of the user id or `sid`,
updated with compare-and-set (no lost update between replicas) and bounded in length. Stale ids
are harmless: deleting a session that already ended does nothing.
"""

from __future__ import annotations

import json
from typing import Final

from gateway.sealing import Sealer
from gateway.storage import Storage

USER_PREFIX: Final = "gw:user:"
SID_PREFIX: Final = "gw:sid:"
MAX_SESSIONS_PER_ENTRY: Final = 100
MAX_ATTEMPTS: Final = 5


class SessionIndex:
    def __init__(self, storage: Storage, sealer: Sealer) -> None:
        self._storage = storage
        self._sealer = sealer

    def _key(self, prefix: str, value: str) -> str:
        return prefix + self._sealer.digest(value)

    async def add(self, session_id: str, *, user: str, sid: str | None, ttl: float) -> None:
        await self._append(self._key(USER_PREFIX, user), session_id, ttl)
        if sid:
            await self._append(self._key(SID_PREFIX, sid), session_id, ttl)

    async def _append(self, key: str, session_id: str, ttl: float) -> None:
        for _ in range(MAX_ATTEMPTS):
            stored = await self._storage.get(key)
            ids = self._open(key, stored)
            ids = [*ids[-(MAX_SESSIONS_PER_ENTRY - 1) :], session_id]
            sealed = self._sealer.seal(key, json.dumps(ids).encode())
            if await self._storage.replace(key, stored, sealed, ttl):
                return
        # Lost the race five times in a row: the next sign-in of this user will be indexed.

    def _open(self, key: str, stored: bytes | None) -> list[str]:
        if stored is None:
            return []
        ids = json.loads(self._sealer.open(key, stored))
        return [str(item) for item in ids] if isinstance(ids, list) else []

    async def take_user(self, user: str) -> list[str]:
        """Every session id indexed for the user, and the entry removed."""
        key = self._key(USER_PREFIX, user)
        return self._open(key, await self._storage.take(key))

    async def take_sid(self, sid: str) -> list[str]:
        key = self._key(SID_PREFIX, sid)
        return self._open(key, await self._storage.take(key))
