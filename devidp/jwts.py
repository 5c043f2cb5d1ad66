"""The JWTs the emulator issues (Entra v2 id tokens and access tokens) and how it checks its own.

Claim sets follow Entra v2: `ver` "2.0", `iss` `https://<host>/<tid>/v2.0`, a pairwise `sub`,
`oid`, `tid`, `uti`, `rh`. Tokens are RS256 with `kid`/`x5t` naming a key in JWKS. Fault
overrides (wrong nonce, issuer, key, ...) are applied by the token endpoint, not here.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import Mapping, Sequence

import jwt

from .config import User
from .errors import INVALID_GRANT, OAuthError
from .groups import group_claims
from .scopes import GRAPH_RESOURCE, Scopes
from .signing_keys import KeyRing, SigningKey, b64url

ID_TOKEN_LIFETIME = 3600


def opaque(n: int = 16) -> str:
    return secrets.token_urlsafe(n)


def pairwise_subject(oid: str, audience: str) -> str:
    """Entra's `sub` differs per application; derive it deterministically from oid and app."""
    return b64url(hashlib.sha256(f"{oid}|{audience}".encode()).digest())[:43]


def service_principal_oid(client_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"devidp:sp:{client_id}"))


def client_info(oid: str, tenant_id: str) -> str:
    """base64url JSON `{"uid", "utid"}`: msal builds `home_account_id` from it."""
    return b64url(json.dumps({"uid": oid, "utid": tenant_id}, separators=(",", ":")).encode())


def sign(claims: Mapping[str, object], key: SigningKey) -> str:
    headers = {"typ": "JWT", "kid": key.kid, "x5t": key.kid}
    return jwt.encode(dict(claims), key.private_key, algorithm="RS256", headers=headers)


def _user_claims(user: User, tenant_id: str, groups_limit: int) -> dict[str, object]:
    claims = group_claims(user.groups, tenant_id=tenant_id, oid=user.oid, limit=groups_limit)
    if user.roles:
        claims["roles"] = list(user.roles)
    claims.update(user.extra_claims)
    return claims


def id_token_claims(
    user: User,
    *,
    client_id: str,
    issuer: str,
    tenant_id: str,
    now: int,
    nonce: str | None,
    auth_time: int | None,
    groups_limit: int,
) -> dict[str, object]:
    """Claims of an id token; `groups_limit` is the groups overage threshold."""
    claims: dict[str, object] = {
        "aud": client_id,
        "iss": issuer,
        "iat": now,
        "nbf": now,
        "exp": now + ID_TOKEN_LIFETIME,
        "name": user.name,
        "oid": user.oid,
        "preferred_username": user.preferred_username,
        "rh": f"0.{opaque(24)}.",
        "sub": pairwise_subject(user.oid, client_id),
        "tid": tenant_id,
        "uti": opaque(),
        "ver": "2.0",
    }
    if user.email:
        claims["email"] = user.email
    if nonce is not None:
        claims["nonce"] = nonce
    if auth_time is not None:
        claims["auth_time"] = auth_time
    claims.update(_user_claims(user, tenant_id, groups_limit))
    return claims


def access_token_claims(
    user: User | None,
    *,
    client_id: str,
    scopes: Scopes,
    issuer: str,
    tenant_id: str,
    now: int,
    lifetime: int,
    azpacr: str,
    groups_limit: int,
) -> dict[str, object]:
    """Claims of an access token for `scopes.resource`; an app token when `user` is None.

    With only OpenID scopes the token is for Microsoft Graph, as with Entra. `groups_limit` is
    the groups overage threshold.
    """
    audience = scopes.resource or GRAPH_RESOURCE
    claims: dict[str, object] = {
        "aud": audience,
        "iss": issuer,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "aio": opaque(24),
        "azp": client_id,
        "azpacr": azpacr,
        "rh": f"0.{opaque(24)}.",
        "tid": tenant_id,
        "uti": opaque(),
        "ver": "2.0",
    }
    if user is None:
        oid = service_principal_oid(client_id)
        claims.update(idtyp="app", oid=oid, sub=oid, roles=[])
        return claims
    claims.update(
        name=user.name,
        oid=user.oid,
        preferred_username=user.preferred_username,
        scp=scopes.scp,
        sub=pairwise_subject(user.oid, audience),
    )
    claims.update(_user_claims(user, tenant_id, groups_limit))
    return claims


def decode_own_access_token(
    token: str, *, keys: KeyRing, issuer: str, audiences: Sequence[str] | None
) -> dict[str, object]:
    """Claims of a token this emulator issued and still publishes a key for.

    Raises `jwt.PyJWTError` (the subclass says what is wrong: signature, audience, expiry...).
    `audiences=None` skips the audience check.
    """
    kid = jwt.get_unverified_header(token).get("kid")
    key = keys.find(kid) if isinstance(kid, str) else None
    if key is None:
        raise jwt.InvalidSignatureError("signed by a key not in the JWKS")
    claims: dict[str, object] = jwt.decode(
        token,
        key.private_key.public_key(),
        algorithms=["RS256"],
        audience=None if audiences is None else list(audiences),
        issuer=issuer,
        options={"require": ["exp", "iat", "iss", "aud"], "verify_aud": audiences is not None},
    )
    return claims


def verify_own_access_token(
    token: str, *, keys: KeyRing, issuer: str, audiences: list[str] | None
) -> dict[str, object]:
    """`decode_own_access_token` for grants: raises OAuthError(invalid_grant, AADSTS50013) on a
    bad signature, issuer, audience or time."""
    try:
        return decode_own_access_token(token, keys=keys, issuer=issuer, audiences=audiences)
    except jwt.PyJWTError as exc:
        raise OAuthError(INVALID_GRANT, 50013, f"Assertion failed validation: {exc}.") from exc
