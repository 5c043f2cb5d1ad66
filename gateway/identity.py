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
from gateway.errors import SessionExpired, SignInRequired
from gateway.sessions import SessionRecord, SessionStore


@dataclass(frozen=True, slots=True)
class Identity:
    session_id: str
    record: SessionRecord


class Refresher(Protocol):
    async def refresh(
        self,
        identity: Identity,
        scopes: tuple[str, ...],
        *,
        force: bool = False,
        claims: str | None = None,
    ) -> Identity:
        """The identity with a fresh token for `scopes` (and a claims challenge, if given),
        persisted before it returns.

        Raises SignInRequired when the user must sign in again (the session is over: revoked or
        expired refresh token), StepUpRequired when only these scopes or claims need the user
        (consent, Conditional Access; the session stays), IdentityProviderError or
        StoreUnavailable when it cannot tell.
        """


async def authenticate(request: web.Request, sessions: SessionStore, cookie_name: str) -> Identity:
    """The caller's identity, or SignInRequired. StoreUnavailable propagates: fail closed."""
    session_id = read_id(request, cookie_name)
    if session_id is None:
        raise SignInRequired("no session")
    record = await sessions.load(session_id)
    if record is None:
        raise SessionExpired("the session has ended")
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
    """Whether the token for `scopes` must be acquired or renewed before forwarding."""
    if not scopes:
        return False
    token = record.token(scopes)
    return token is None or now >= token.refresh_at
