"""Who is asking: the session cookie turned into an Identity, with one store read.

Also decides whether the session's upstream access token is due for refresh, and declares the
Refresher that the hot path calls when it is (implemented in oidc.py, handed in by app.py), so the
hot path never imports MSAL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from gateway.cookies import read_id
from gateway.errors import SignInRequired
from gateway.sessions import SessionRecord, SessionStore


@dataclass(frozen=True, slots=True)
class Identity:
    session_id: str
    record: SessionRecord


class Refresher(Protocol):
    async def refresh(self, identity: Identity, *, force: bool = False) -> Identity:
        """The identity with fresh upstream tokens, persisted before it returns.

        Raises SignInRequired when the session can no longer get tokens (revoked, expired
        refresh token), IdentityProviderError or StoreUnavailable when it cannot tell.
        """


async def authenticate(request: web.Request, sessions: SessionStore, cookie_name: str) -> Identity:
    """The caller's identity, or SignInRequired. StoreUnavailable propagates: fail closed."""
    session_id = read_id(request, cookie_name)
    if session_id is None:
        raise SignInRequired("no session")
    record = await sessions.load(session_id)
    if record is None:
        raise SignInRequired("the session has ended")
    return Identity(session_id, record)


async def authenticate_optional(
    request: web.Request, sessions: SessionStore, cookie_name: str
) -> Identity | None:
    """Like authenticate, but None for an anonymous caller (public paths)."""
    if read_id(request, cookie_name) is None:
        return None
    try:
        return await authenticate(request, sessions, cookie_name)
    except SignInRequired:
        return None


def refresh_due(record: SessionRecord, scopes: tuple[str, ...], now: float) -> bool:
    """Whether the upstream access token must be renewed before this request is forwarded."""
    if not scopes:
        return False
    return not record.access_token or record.token_scopes != scopes or now >= record.refresh_at
