"""Which sessions belong to a user or to an identity-provider sign-in session (`sid`), so that a
logout or a revocation reaches all of them on every replica.

Each index entry is a sealed list of session ids under a keyed digest of the user id or `sid`,
updated with compare-and-set (no lost update between replicas) and bounded in length: a user (or a
`sid`) has at most MAX_SESSIONS_PER_ENTRY sessions, and a new one beyond that ends the oldest,
never leaves it running unindexed. Stale ids are harmless: deleting a session that already ended
does nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from gateway.sessions.sealed_list import SealedList
from gateway.sessions.sealing import Sealer
from gateway.store.storage import Storage

USER_PREFIX: Final = "gw:user:"
SID_PREFIX: Final = "gw:sid:"
MAX_SESSIONS_PER_ENTRY: Final = 100


class SessionIndex:
    def __init__(self, storage: Storage, sealer: Sealer) -> None:
        self._lists = SealedList(storage, sealer)
        self._sealer = sealer

    def _key(self, prefix: str, value: str) -> str:
        return prefix + self._sealer.digest(value)

    async def add(
        self, session_id: str, *, users: Iterable[str], sid: str | None, ttl: float
    ) -> set[str]:
        """Index the session under each name of its user (tokens/subject.py: the user key and
        the id operators see) and under its `sid`. Returns the older sessions that no longer fit
        an entry: the caller must end them, since revocation could no longer find them.
        StoreUnavailable when the index could not be written: the session must not start."""
        keys = [self._key(USER_PREFIX, user) for user in users]
        if sid:
            keys.append(self._key(SID_PREFIX, sid))
        dropped: set[str] = set()
        for key in keys:
            dropped.update(
                await self._lists.append(key, session_id, ttl=ttl, limit=MAX_SESSIONS_PER_ENTRY)
            )
        dropped.discard(session_id)
        return dropped

    async def take_user(self, user: str) -> list[str]:
        """Every session id indexed for the user, and the entry removed."""
        return await self._take(USER_PREFIX, user)

    async def take_sid(self, sid: str) -> list[str]:
        return await self._take(SID_PREFIX, sid)

    async def _take(self, prefix: str, value: str) -> list[str]:
        """The entry under every name a configured cookie secret gives it: revocation must find
        sessions indexed by replicas with another current secret (a rotation under way)."""
        taken = await self._lists.take(self._key(prefix, value))
        for name, _ in self._sealer.older_digests(value):
            taken.extend(
                item for item in await self._lists.take(prefix + name) if item not in taken
            )
        return taken
