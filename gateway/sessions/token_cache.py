"""Each session's MSAL token cache (it holds refresh tokens), sealed beside the session record.

Read only on the sign-in and refresh paths, never on a normal proxied request. Written only when
MSAL reports a change. Deleted with the session. During a cookie-secret rotation a cache is looked
up under the other secrets' names too, and one a previous secret sealed or named is moved under the
current name when it is next written, or at once when its session record moves (`adopt`).

What MSAL serializes is stored compact, and less its id tokens and access tokens: what MSAL needs
to acquire tokens silently (the account, the refresh token, the app metadata) is kept. The session
record keeps the current id_token (the hot path forwards it and reads its `sid`) and the access
token of each scope set it uses, with the time it is due for renewal; the refresher asks MSAL only
once that time has come, when a cached access token would be passed over anyway, and keeps the
record's token itself when a renewal fails (oidc/refresher.py). A refresh that returns a new
id_token hands it to the record. Dropping the access tokens also keeps the cache from growing with
every scope set a session is given a token for.
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
# Sections of MSAL's serialized cache not worth storing (see the module docstring): most of it.
_UNSTORED_SECTIONS: Final = ("IdToken", "AccessToken")


def storable(serialized: str) -> str:
    """MSAL's serialized cache without the sections that need not be stored, and without the
    indentation MSAL writes; as it is when it is not the JSON object MSAL writes (reading it
    back will say so)."""
    try:
        cache = json.loads(serialized)
    except ValueError:
        return serialized
    if not isinstance(cache, dict):
        return serialized
    for section in _UNSTORED_SECTIONS:
        cache.pop(section, None)
    return json.dumps(cache, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class StoredCache:
    """A token cache as loaded: the serialized MSAL cache, and the exact stored bytes that a
    later compare-and-set write must still find."""

    serialized: str
    stored: bytes
    key: str = ""  # the store key it was read under (see sessions/store.py StoredSession.key)
    stale: bool = False  # sealed with, or named by, a previous cookie secret


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
        found = await self._read(self._key(session_id))
        if found is None and self._sealer.rotating:
            for name, stale in self._sealer.older_digests(session_id):
                found = await self._read(TOKENS_PREFIX + name, stale=stale)
                if found is not None:
                    break
        return found

    async def _read(self, key: str, *, stale: bool = False) -> StoredCache | None:
        sealed = await self._storage.get(key)
        if sealed is None:
            return None
        opened = self._sealer.open_aged(key, sealed)
        serialized = opened.plaintext.decode()
        try:
            shaped = isinstance(json.loads(serialized), dict)
        except ValueError:
            shaped = False
        if not shaped:  # MSAL would fail on it in a worker thread, as an unexpected error
            raise CorruptRecordError(f"token cache under {key} is not an MSAL cache")
        return StoredCache(serialized, sealed, key, stale or opened.stale)

    async def save(self, session_id: str, serialized: str, ttl: float) -> None:
        key = self._key(session_id)
        if ttl > 0:
            sealed = self._sealer.seal(key, storable(serialized).encode())
            await self._storage.set(key, sealed, ttl)

    async def replace(
        self, session_id: str, previous: StoredCache, serialized: str, ttl: float
    ) -> bool:
        """Write `serialized` only if the store still holds `previous`; whether it was written.
        A cache a previous cookie secret sealed or named moves under the current name."""
        key = self._key(session_id)
        if ttl <= 0:
            return False
        serialized = storable(serialized)
        if not previous.key or previous.key == key or not previous.stale:
            at = previous.key or key  # a next secret's name stays: see sessions/sealing.py
            sealed = self._sealer.seal(at, serialized.encode())
            return await self._storage.replace(at, previous.stored, sealed, ttl)
        sealed = self._sealer.seal(key, serialized.encode())
        if not await self._storage.replace(key, None, sealed, ttl):
            return False  # something newer is under the current name already
        await self._storage.delete(previous.key)
        return True

    async def adopt(self, session_id: str, ttl: float) -> None:
        """Re-seal the cache under the current name now if a previous secret sealed or named it
        (its session record just was), so that dropping that secret loses no refresh token."""
        try:
            loaded = await self.load(session_id)
        except CorruptRecordError:
            return
        if loaded is not None and loaded.stale:
            await self.replace(session_id, loaded, loaded.serialized, ttl)

    async def delete(self, session_id: str) -> None:
        """Gone under every name a configured secret gives it."""
        for name in (
            self._key(session_id),
            *(TOKENS_PREFIX + n for n, _ in self._sealer.older_digests(session_id)),
        ):
            await self._storage.delete(name)
