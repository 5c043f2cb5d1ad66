"""The gateway's own id_token policy. MSAL checks only the nonce (ENTRA.md b.6), so this checks the
rest: an RS256 signature by a key from the provider's JWKS, the exact issuer for the token's own
tenant, the audience, the time claims with bounded leeway, and the tenant allow-list for
multi-tenant authorities. Key-supplying headers (jku, x5u, jwk, x5c) are never used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import jwt

from gateway.errors import BadRequest

TENANT_TEMPLATE: Final = "{tenantid}"


class InvalidIdToken(BadRequest):
    code = "invalid_id_token"


@dataclass(frozen=True, slots=True)
class IdTokenPolicy:
    issuer: str  # from discovery; may contain {tenantid} for organizations/common
    audience: str
    allowed_tenants: frozenset[str]  # empty: any tenant the issuer admits
    leeway_seconds: int


def expected_issuer(policy: IdTokenPolicy, claims: Mapping[str, Any]) -> str:
    if TENANT_TEMPLATE not in policy.issuer:
        return policy.issuer
    tid = claims.get("tid")
    if not isinstance(tid, str) or not tid:
        raise InvalidIdToken("the id_token names no tenant")
    return policy.issuer.replace(TENANT_TEMPLATE, tid)


def key_id(token: str) -> str | None:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise InvalidIdToken("the id_token is malformed") from exc
    if header.get("alg") != "RS256":
        raise InvalidIdToken("the id_token is not signed with RS256")
    kid = header.get("kid")
    return kid if isinstance(kid, str) else None


def validate(token: str, key: jwt.PyJWK, policy: IdTokenPolicy) -> dict[str, Any]:
    """The verified claims, or InvalidIdToken saying which rule failed."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key,
            algorithms=["RS256"],
            audience=policy.audience,
            leeway=policy.leeway_seconds,
            options={
                "require": ["exp", "iat", "iss", "aud", "sub"],
                # The issuer is compared below, exactly, after the tenant is substituted.
                "verify_iss": False,
            },
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidIdToken("the id_token has expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise InvalidIdToken("the id_token was issued for another application") from exc
    except jwt.PyJWTError as exc:
        raise InvalidIdToken(f"the id_token is not valid ({type(exc).__name__})") from exc
    if claims.get("iss") != expected_issuer(policy, claims):
        raise InvalidIdToken("the id_token was issued by an unexpected issuer")
    if policy.allowed_tenants and claims.get("tid") not in policy.allowed_tenants:
        raise InvalidIdToken("this tenant is not allowed to sign in")
    return claims
