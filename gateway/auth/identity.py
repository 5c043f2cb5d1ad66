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
class Identity:
    session_id: str
    record: SessionRecord
    scopes: tuple[str, ...] | None = None  # `scp` of an API caller's bearer token
    bearer: str | None = None  # an API caller's own verified access token (no session)


class ApiCallers(Protocol):
    """API clients that present an access token instead of a session cookie
    (oidc/api_callers.py)."""

    async def identify(self, token: str) -> Identity:
        """The caller's identity, or InvalidBearer (401)."""

    async def upstream_token(self, identity: Identity, scopes: tuple[str, ...]) -> str | None:
        """The bearer token this caller's request carries upstream for `scopes`, if any."""


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
    session_id = read_id(request, cookie_name)
    if session_id is None:
        raise SignInRequired("no session")
    record = await sessions.load(session_id)
    if record is None:
        raise SessionExpired("the session has ended")
    return Identity(session_id, record)


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
    if not scopes or not record.home_account_id:  # no scopes, or an API caller: no session
        return False
    token = record.token(scopes)
    return token is None or now >= token.refresh_at


def email_trusted(claims: Mapping[str, Any], multi_tenant: bool) -> bool:
    """Whether the email claim may be believed: always from a single tenant (admin-managed), and
    from a multi-tenant authority only when Entra says the domain is verified (nOAuth)."""
    return not multi_tenant or claims.get("xms_edov") is True


def admit(rule: PolicyRule, identity: Identity, *, multi_tenant: bool) -> None:
    """Forbidden (and an audit line) unless the identity meets the rule."""
    record = identity.record
    principal = Principal(
        claims=record.claims,
        groups=record.groups,
        scopes=identity.scopes,
        email_trusted=email_trusted(record.claims, multi_tenant),
    )
    reason = refusal(rule, principal)
    if reason is not None:
        # The rule's path, not the request's: nothing the client sent is written to the log.
        audit.warning(
            "access denied: user=%s rule=%s reason=%s",
            record.user_key,
            rule.path,
            reason,
            extra={"event": "access_denied", "user": record.user_key, "rule": rule.path},
        )
        raise Forbidden("you do not have access to this page")
