"""SessionRefresher: renewing a session's upstream tokens, once at a time per session, across
every replica.

The critical section load → silent acquire → save runs under the session's lock (in-process and,
with Redis, across replicas, renewed while it runs), re-reads the session after taking the lock so
that a request that waited finds the work done, writes the token cache with compare-and-set so a
holder whose lock lapsed cannot overwrite a newer cache, and persists everything before it
returns, i.e. before any response byte is streamed. A refresh token refused as invalid is checked
against a fresh read of the cache first: another replica may have rotated it.

The stored MSAL cache holds no access tokens (sessions/token_cache.py): the record's token is the
one a failed renewal falls back to, as MSAL would to its cached one. A renewal the provider cannot
make keeps the token while it is usable; one it refuses keeps it only while MSAL would have (more
than five minutes and the refresh skew left, and the renewal merely due, not asked for: Entra's
refresh_in), then ends the session (or, for a step-up, sends the user to the provider).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Final

from gateway.auth.identity import SessionIdentity, refresh_due
from gateway.errors import (
    CorruptRecordError,
    GatewayError,
    RenewalRefused,
    SignInRequired,
    StepUpRequired,
)
from gateway.oidc.msal_client import MsalClient, Tokens
from gateway.sessions.ending import end_session
from gateway.sessions.store import SessionRecord, SessionStore, UpstreamToken, session_claims
from gateway.sessions.token_cache import StoredCache, TokenCacheStore
from gateway.store.storage import Clock, Storage
from gateway.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

# A token with less than this left is not worth keeping when the provider fails to renew it.
MIN_USABLE_SECONDS: Final = 10.0
# When the provider refuses to renew a token that was merely due (a revoked refresh token, say),
# the token is kept only while it has more than this left, and more than the refresh skew: MSAL's
# bound, below which it counts a cached token as expired and falls back to nothing.
AGING_MIN_SECONDS: Final = 300.0
RETRY_AFTER_FAILURE_SECONDS: Final = 30.0
# The refresh outcome of a refusal that kept the token (not a failure the operator must act on).
KEPT_AFTER_REFUSAL: Final = "kept_after_refusal"


def _kept(
    record: SessionRecord,
    scopes: tuple[str, ...],
    now: float,
    min_left: float,
    error: GatewayError,
) -> SessionRecord | None:
    """The record keeping its current token for `scopes`, to be renewed again in a while, if it
    has more than `min_left` seconds to go; None otherwise."""
    current = record.token(scopes)
    if current is None or current.expires_at - now <= min_left:
        return None
    log.warning(
        "token renewal %s (%s); keeping the current token until %.0f s before it expires",
        "refused" if isinstance(error, SignInRequired) else "failed",
        error.code,
        min_left,
    )
    retry_at = min(now + RETRY_AFTER_FAILURE_SECONDS, current.expires_at - min_left)
    return record.with_token(scopes, replace(current, refresh_at=retry_at))


class SessionRefresher:
    """Implements identity.Refresher."""

    def __init__(
        self,
        *,
        storage: Storage,
        sessions: SessionStore,
        token_caches: TokenCacheStore,
        msal: MsalClient,
        lock_ttl: float,
        lock_wait: float,
        clock: Clock,
        metrics: Metrics,
        refresh_skew: float,
    ) -> None:
        """`refresh_skew`: GATEWAY_TOKENS__REFRESH_SKEW_SECONDS, how long before expiry a token
        is renewed at the latest."""
        self._storage = storage
        self._sessions = sessions
        self._token_caches = token_caches
        self._msal = msal
        self._lock_ttl = lock_ttl
        self._lock_wait = lock_wait
        self._clock = clock
        self._metrics = metrics
        self._refused_min_left = max(AGING_MIN_SECONDS, refresh_skew)

    async def refresh(
        self,
        identity: SessionIdentity,
        scopes: tuple[str, ...],
        *,
        force: bool = False,
        claims: str | None = None,
    ) -> SessionIdentity:
        session_id = identity.session_id
        lock = self._token_caches.lock_name(session_id)
        async with self._storage.lock(lock, self._lock_ttl, self._lock_wait):
            loaded = await self._sessions.load_stored(session_id)
            if loaded is None:
                raise SignInRequired("the session has ended")
            record, now = loaded.record, self._clock()
            if not force and claims is None and not refresh_due(record, scopes, now):
                return SessionIdentity(session_id, record)  # another request refreshed meanwhile
            stored = await self._load_cache(session_id)
            chosen = force or claims is not None  # renewal asked for, not merely due
            try:
                tokens, stored = await self._acquire(
                    session_id, record, stored, scopes, force, claims
                )
            except SignInRequired as error:  # StepUpRequired among them
                # Refused while the token still has a while to go (an early renewal, as Entra's
                # refresh_in asks for): MSAL's own rule is to keep using it until then. A session
                # whose cache cannot renew at all (no account, no refresh token) is not kept.
                kept = None
                if not chosen and isinstance(error, RenewalRefused | StepUpRequired):
                    kept = _kept(record, scopes, now, self._refused_min_left, error)
                if kept is None:
                    self._metrics.refreshes.labels(error.code).inc()
                    if not isinstance(error, StepUpRequired):
                        await self._end(session_id)
                    raise  # a step-up: only these scopes or claims need the user
                self._metrics.refreshes.labels(KEPT_AFTER_REFUSAL).inc()
                tokens, updated = None, kept
            except GatewayError as error:
                self._metrics.refreshes.labels(error.code).inc()
                # The provider is failing but the token is still good: use it, try again later,
                # and do not make every request wait for (or hammer) the provider meanwhile.
                kept = None if force else _kept(record, scopes, now, MIN_USABLE_SECONDS, error)
                if kept is None:
                    raise
                tokens, updated = None, kept
            if tokens is not None:
                self._metrics.refreshes.labels("success").inc()
                if tokens.cache is not None and not await self._token_caches.replace(
                    session_id, stored, tokens.cache, record.expires_at - now
                ):
                    # Deleted (sign-out) or rewritten by a holder whose turn came after ours.
                    log.warning("token cache changed during a refresh; not overwritten")
                updated = record.with_token(
                    scopes,
                    UpstreamToken(tokens.access_token, tokens.expires_at, tokens.refresh_at)
                    if scopes
                    else None,
                    id_token=tokens.id_token,
                    claims=session_claims(tokens.claims) if tokens.claims else None,
                )
            if not await self._sessions.replace(session_id, loaded, updated):
                # Signed out while we refreshed (the session must stay ended), or rewritten.
                current_record = await self._sessions.load(session_id)
                if current_record is None:
                    raise SignInRequired("the session ended during the refresh")
                return SessionIdentity(session_id, current_record)
            return SessionIdentity(session_id, updated)

    async def _load_cache(self, session_id: str) -> StoredCache:
        try:
            stored = await self._token_caches.load(session_id)
        except CorruptRecordError:
            log.warning("token cache failed to open; the user must sign in again")
            stored = None
        if stored is None:
            await self._end(session_id)
            raise SignInRequired("the session holds no tokens")
        return stored

    async def _acquire(
        self,
        session_id: str,
        record: SessionRecord,
        stored: StoredCache,
        scopes: tuple[str, ...],
        force: bool,
        claims: str | None,
    ) -> tuple[Tokens, StoredCache]:
        """Tokens from the cache as stored, and the stored cache they came from."""
        account = record.home_account_id
        try:
            tokens = await self._msal.refresh(
                stored.serialized, account, scopes, force=force, claims=claims
            )
        except StepUpRequired:
            raise
        except SignInRequired:
            # Under strict rotation a replica whose lock lapsed may have rotated the refresh
            # token after we read the cache: only a refusal of the newest cache ends the session.
            newer = await self._token_caches.load(session_id)
            if newer is None or newer.stored == stored.stored:
                raise
            log.info("refresh token was rotated by another replica; retrying with its cache")
            tokens = await self._msal.refresh(
                newer.serialized, account, scopes, force=force, claims=claims
            )
            stored = newer
        return tokens, stored

    async def _end(self, session_id: str) -> None:
        await end_session(self._sessions, self._token_caches, session_id)
