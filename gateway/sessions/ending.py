"""Ending a session: its record and its token cache go together, wherever a session ends
(sign-out, revocation, front-channel logout, a refresh token refused, the per-user cap)."""

from __future__ import annotations

from gateway.sessions.store import SessionStore
from gateway.sessions.token_cache import TokenCacheStore


async def end_session(
    sessions: SessionStore, token_caches: TokenCacheStore, session_id: str
) -> None:
    """The record first: once it is gone no request is served for the session, whatever the
    token cache's fate (a failure there leaves only an orphan that expires with its TTL)."""
    await sessions.delete(session_id)
    await token_caches.delete(session_id)
