"""Who is asking: the session cookie turned into an Identity, with one store read.

Also decides whether the session's upstream access token is due for refresh, and declares the
Refresher that the hot path calls when it is (implemented in oidc/msal_client.py, handed in by
app.py), so the hot path never imports MSAL.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from gateway.auth.cookies import read_id
from gateway.auth.policy import Principal, refusal
from gateway.config.access import PolicyRule
from gateway.errors import Forbidden, SessionExpired, SignInRequired
from gateway.sessions.store import SessionRecord, SessionStore
from gateway.tokens.bearer import bearer_from

audit = logging.getLogger("gateway.audit")


@dataclass(frozen=True, slots=True)
class SessionIdentity:
    """A browser's signed-in session: its id and the record it loaded."""

    session_id: str
    record: SessionRecord

    @property
    def user_key(self) -> str:
        return self.record.user_key

    @property
    def claims(self) -> Mapping[str, Any]:
        return self.record.claims

    @property
    def groups(self) -> tuple[str, ...] | None:
        return self.record.groups

    @property
    def scopes(self) -> None:
        """Browsers carry no `scp`; scope rules never admit them."""
        return None


@dataclass(frozen=True, slots=True)
class ApiCallerIdentity:
    """An API client judged by its own verified access token: no session, no token cache, never
    refreshed."""

    token: str  # the caller's access token, as verified
    user_key: str
    claims: Mapping[str, Any]
    scopes: tuple[str, ...]  # the token's `scp`
    expires_at: float

    @property
    def groups(self) -> tuple[str, ...] | None:
        return None  # no Graph lookup for API callers: the token's groups claim is what counts


Identity = SessionIdentity | ApiCallerIdentity


class ApiCallers(Protocol):
    """API clients that present an access token instead of a session cookie
    (oidc/api_callers.py)."""

    async def identify(self, token: str) -> ApiCallerIdentity:
        """The caller's identity, or InvalidBearer (401)."""

    async def upstream_token(
        self, identity: ApiCallerIdentity, scopes: tuple[str, ...]
    ) -> str | None:
        """The bearer token this caller's request carries upstream for `scopes`, if any."""


class Refresher(Protocol):
    async def refresh(
        self,
        identity: SessionIdentity,
        scopes: tuple[str, ...],
        *,
        force: bool = False,
        claims: str | None = None,
    ) -> SessionIdentity:
        """The identity with a fresh token for `scopes` (and a claims challenge, if given),
        persisted before it returns.

        Raises SignInRequired when the user must sign in again (the session is over: revoked or
        expired refresh token), StepUpRequired when only these scopes or claims need the user
        (consent, Conditional Access; the session stays), IdentityProviderError or
        StoreUnavailable when it cannot tell.
        """


async def authenticate(
    request: web.Request,
    sessions: SessionStore,
    cookie_name: str,
    api: ApiCallers | None = None,
) -> Identity:
    """The caller's identity, or SignInRequired. StoreUnavailable propagates: fail closed.

    With `api`, a request carrying `Authorization: Bearer` is an API caller and is judged by its
    token alone (MalformedAuthorization for a malformed header)."""
    if api is not None:
        token = bearer_from(request.headers.getall("Authorization", []))
        if token is not None:
            return await api.identify(token)
    return await authenticate_session(request, sessions, cookie_name)


async def authenticate_session(
    request: web.Request, sessions: SessionStore, cookie_name: str
) -> SessionIdentity:
    """The browser session the cookie names, or SignInRequired (no cookie) / SessionExpired."""
    session_id = read_id(request, cookie_name)
    if session_id is None:
        raise SignInRequired("no session")
    record = await sessions.load(session_id)
    if record is None:
        raise SessionExpired("the session has ended")
    return SessionIdentity(session_id, record)


async def authenticate_optional(
    request: web.Request,
    sessions: SessionStore,
    cookie_name: str,
    api: ApiCallers | None = None,
) -> Identity | None:
    """Like authenticate, but None for an anonymous caller (public paths)."""
    has_bearer = api is not None and "Authorization" in request.headers
    if read_id(request, cookie_name) is None and not has_bearer:
        return None
    try:
        return await authenticate(request, sessions, cookie_name, api)
    except SignInRequired:
        return None


def refresh_due(record: SessionRecord, scopes: tuple[str, ...], now: float) -> bool:
    """Whether the token for `scopes` must be acquired or renewed before forwarding."""
    if not scopes or not record.home_account_id:  # no account in the cache to ask MSAL about
        return False
    token = record.token(scopes)
    return token is None or now >= token.refresh_at


def email_trusted(claims: Mapping[str, Any], multi_tenant: bool) -> bool:
    """Whether the email claim may be believed: always from a single tenant (admin-managed), and
    from a multi-tenant authority only when Entra says the domain is verified (nOAuth)."""
    return not multi_tenant or claims.get("xms_edov") is True


def admit(rule: PolicyRule, identity: Identity, *, multi_tenant: bool) -> None:
    """Forbidden (and an audit line) unless the identity meets the rule."""
    principal = Principal(
        claims=identity.claims,
        groups=identity.groups,
        scopes=identity.scopes,
        email_trusted=email_trusted(identity.claims, multi_tenant),
    )
    reason = refusal(rule, principal)
    if reason is not None:
        # The rule's path, not the request's: nothing the client sent is written to the log.
        audit.warning(
            "access denied: user=%s rule=%s reason=%s",
            identity.user_key,
            rule.path,
            reason,
            extra={"event": "access_denied", "user": identity.user_key, "rule": rule.path},
        )
        raise Forbidden("you do not have access to this page")
