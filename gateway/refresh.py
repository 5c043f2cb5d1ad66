"""SessionRefresher: renewing a session's upstream tokens, once at a time per session.

The critical section load → silent acquire → save runs under the session's lock (in-process and,
with Redis, across replicas), re-reads the session after taking the lock so that a request that
waited finds the work done, and persists the token cache and the record before it returns, i.e.
before any response byte is streamed.
"""

from __future__ import annotations

import logging

from gateway.errors import CorruptRecordError, GatewayError, SignInRequired
from gateway.identity import Identity, refresh_due
from gateway.metrics import Metrics
from gateway.oidc import MsalClient
from gateway.sessions import SessionStore
from gateway.storage import Clock, Storage
from gateway.token_cache import TokenCacheStore

log = logging.getLogger(__name__)


class SessionRefresher:
    """Implements identity.Refresher."""

    def __init__(
        self,
        *,
        storage: Storage,
        sessions: SessionStore,
        token_caches: TokenCacheStore,
        msal: MsalClient,
        scopes: tuple[str, ...],
        lock_ttl: float,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self._metrics = metrics
        self._storage = storage
        self._sessions = sessions
        self._token_caches = token_caches
        self._msal = msal
        self._scopes = scopes
        self._lock_ttl = lock_ttl
        self._clock = clock

    async def refresh(self, identity: Identity, *, force: bool = False) -> Identity:
        session_id = identity.session_id
        async with self._storage.lock(self._token_caches.lock_name(session_id), self._lock_ttl):
            record = await self._sessions.load(session_id)
            if record is None:
                raise SignInRequired("the session has ended")
            if not force and not refresh_due(record, self._scopes, self._clock()):
                return Identity(session_id, record)  # another request refreshed meanwhile
            try:
                serialized = await self._token_caches.load(session_id)
            except CorruptRecordError:
                log.warning("token cache failed to open; the user must sign in again")
                serialized = None
            if serialized is None:
                await self._end(session_id)
                raise SignInRequired("the session holds no tokens")
            try:
                tokens = await self._msal.refresh(serialized, record.home_account_id, force=force)
            except SignInRequired as error:
                self._metrics.refreshes.labels(error.code).inc()
                await self._end(session_id)
                raise
            except GatewayError as error:
                self._metrics.refreshes.labels(error.code).inc()
                raise
            self._metrics.refreshes.labels("success").inc()
            remaining = record.expires_at - self._clock()
            if tokens.cache is not None:
                await self._token_caches.save(session_id, tokens.cache, remaining)
            updated = record.with_tokens(
                access_token=tokens.access_token,
                expires_at=tokens.expires_at,
                refresh_at=tokens.refresh_at,
                id_token=tokens.id_token,
                scopes=self._scopes,
            )
            await self._sessions.save(session_id, updated)
            return Identity(session_id, updated)

    async def _end(self, session_id: str) -> None:
        await self._sessions.delete(session_id)
        await self._token_caches.delete(session_id)
