"""Token responses (ENTRA.md b.5): which fields a user or app token response carries.

This is where the active `TokenFaults` are applied, so the claim builders in `tokens.py` stay
truthful and the faults stay in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .claims import ClaimsRequest
from .config import User
from .faults import TokenFaults
from .grants import RefreshGrant
from .jwts import access_token_claims, client_info, id_token_claims, sign
from .scopes import Scopes
from .state import DevIdpState

EXPIRED_BY = 7200


@dataclass(frozen=True, slots=True)
class SignIn:
    """The user sign-in a token request continues (from a code, a refresh token or OBO).

    `claims` is what this token request asks for; `satisfied_acrs` are the authentication
    contexts the sign-in satisfied, handed on to the refresh token.
    """

    user: User
    auth_time: int
    include_auth_time: bool
    nonce: str | None = None
    claims: ClaimsRequest = field(default_factory=ClaimsRequest)
    satisfied_acrs: tuple[str, ...] = ()


def user_token_response(
    state: DevIdpState, *, client_id: str, azpacr: str, scopes: Scopes, sign_in: SignIn
) -> dict[str, object]:
    now = int(state.clock())
    lifetimes, faults = state.lifetimes, state.token_faults
    user = sign_in.user
    at = access_token_claims(
        user,
        client_id=client_id,
        scopes=scopes,
        issuer=state.urls.issuer,
        tenant_id=state.config.tenant_id,
        now=now,
        lifetime=lifetimes.expires_in,
        azpacr=azpacr,
        groups_limit=state.policies.groups_overage_limit,
    )
    at.update(sign_in.claims.access_token_claims())
    body: dict[str, object] = {
        "token_type": "Bearer",
        "scope": scopes.text,
        "expires_in": lifetimes.expires_in,
        "ext_expires_in": lifetimes.ext_expires_in or lifetimes.expires_in,
    }
    if lifetimes.refresh_in is not None:
        body["refresh_in"] = lifetimes.refresh_in
    body["access_token"] = sign(at, state.keys.current)
    if scopes.offline_access and not faults.omit_refresh_token:
        body["refresh_token"] = state.grants.issue_refresh_token(
            RefreshGrant(
                client_id=client_id,
                user_oid=user.oid,
                auth_time=sign_in.auth_time,
                include_auth_time=sign_in.include_auth_time,
                issued_at=state.clock(),
                acrs=sign_in.satisfied_acrs,
            )
        )
    if scopes.openid and not faults.omit_id_token:
        body["id_token"] = _id_token(state, faults, client_id, sign_in, now)
    if not faults.omit_client_info:
        body["client_info"] = client_info(user.oid, state.config.tenant_id)
    return body


def _id_token(
    state: DevIdpState, faults: TokenFaults, client_id: str, sign_in: SignIn, now: int
) -> str:
    issued = now - EXPIRED_BY - 3600 if faults.id_token_expired else now
    claims = id_token_claims(
        sign_in.user,
        client_id=client_id,
        issuer=state.urls.issuer,
        tenant_id=state.config.tenant_id,
        now=issued,
        nonce=sign_in.nonce,
        auth_time=sign_in.auth_time if sign_in.include_auth_time else None,
        groups_limit=state.policies.groups_overage_limit,
    )
    if faults.nonce is not None:
        claims["nonce"] = faults.nonce
    if faults.id_token_issuer is not None:
        claims["iss"] = faults.id_token_issuer
    if faults.id_token_audience is not None:
        claims["aud"] = faults.id_token_audience
    for name, value in faults.id_token_claims.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    key = state.keys.rogue() if faults.id_token_unknown_key else state.keys.current
    return sign(claims, key)


def app_token_response(
    state: DevIdpState, *, client_id: str, azpacr: str, scopes: Scopes
) -> dict[str, object]:
    """Client credentials: only token_type, expires_in, ext_expires_in and access_token."""
    now = int(state.clock())
    lifetimes = state.lifetimes
    claims = access_token_claims(
        None,
        client_id=client_id,
        scopes=scopes,
        issuer=state.urls.issuer,
        tenant_id=state.config.tenant_id,
        now=now,
        lifetime=lifetimes.expires_in,
        azpacr=azpacr,
        groups_limit=state.policies.groups_overage_limit,
    )
    return {
        "token_type": "Bearer",
        "expires_in": lifetimes.expires_in,
        "ext_expires_in": lifetimes.ext_expires_in or lifetimes.expires_in,
        "access_token": sign(claims, state.keys.current),
    }
