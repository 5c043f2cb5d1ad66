"""Signed-in sessions: the record, and the store that keeps it sealed under a digest of the cookie.

A session record holds what the hot path needs without touching MSAL: the principal's claims, the
lifetimes, and the current upstream access token with the time it is due for refresh. The MSAL
token cache itself lives apart (token_cache.py) and is read only on the sign-in and refresh paths.
Cookies are cookies.py's business.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final

from gateway.errors import CorruptRecordError
from gateway.sealing import Sealer
from gateway.storage import Clock, Storage

log = logging.getLogger(__name__)

SESSION_PREFIX: Final = "gw:session:"


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One signed-in browser session. Times are epoch seconds."""

    user_key: str  # oid.tid for Entra, iss|sub otherwise: never an email (nOAuth)
    home_account_id: str  # MSAL's account key in the session's token cache
    claims: dict[str, Any]
    created_at: float
    expires_at: float  # absolute end of the session
    id_token: str = ""
    access_token: str = ""
    access_token_expires_at: float = 0.0
    refresh_at: float = 0.0  # when the access token is due for refresh
    token_scopes: tuple[str, ...] = field(default_factory=tuple)

    def with_tokens(
        self,
        *,
        access_token: str,
        expires_at: float,
        refresh_at: float,
        id_token: str | None,
        scopes: tuple[str, ...],
    ) -> SessionRecord:
        return replace(
            self,
            token_scopes=scopes,
            access_token=access_token,
            access_token_expires_at=expires_at,
            refresh_at=refresh_at,
            id_token=id_token or self.id_token,
        )

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> SessionRecord:
        try:
            data = json.loads(raw)
            data["token_scopes"] = tuple(data.get("token_scopes", ()))
            return cls(**data)
        except (ValueError, TypeError, KeyError) as exc:
            raise CorruptRecordError("session record does not parse") from exc


class SessionStore:
    """Load, save and delete session records. Absent, expired and corrupt records read as None."""

    def __init__(self, storage: Storage, sealer: Sealer, idle_ttl: float, clock: Clock) -> None:
        self._storage = storage
        self._sealer = sealer
        self._idle_ttl = idle_ttl
        self._clock = clock

    def key(self, session_id: str) -> str:
        return SESSION_PREFIX + self._sealer.digest(session_id)

    async def load(self, session_id: str) -> SessionRecord | None:
        """One round trip: read and slide the idle TTL. StoreUnavailable propagates."""
        key = self.key(session_id)
        sealed = await self._storage.get(key, slide_ttl=self._idle_ttl)
        if sealed is None:
            return None
        try:
            record = SessionRecord.decode(self._sealer.open(key, sealed))
        except CorruptRecordError:
            log.warning("session record failed to open; treating as signed out", exc_info=True)
            await self._storage.delete(key)
            return None
        if record.expires_at <= self._clock():
            await self._storage.delete(key)
            return None
        return record

    async def save(self, session_id: str, record: SessionRecord) -> None:
        key = self.key(session_id)
        ttl = min(self._idle_ttl, record.expires_at - self._clock())
        if ttl <= 0:
            return
        await self._storage.set(key, self._sealer.seal(key, record.encode()), ttl)

    async def delete(self, session_id: str) -> None:
        await self._storage.delete(self.key(session_id))
