"""Entra access tokens that API clients present as `Authorization: Bearer <jwt>` (THREATS A3).

Owns: reading the Authorization header strictly (`bearer_from`), the bearer-token policy
(`BearerPolicy`, `validate`) and the claims kept from a verified token
(`identity_claims`). Pure and synchronous, for the hot path: no network, no MSAL, no aiohttp.

Does not: fetch signing keys (the caller hands in `keys(kid)`; on `UnknownKey` it may refetch the
provider's JWKS, at most once a minute, and validate again), decide which scopes or roles a route
needs (auth/policy.py), render errors or `WWW-Authenticate` (web/middleware.py), check id tokens
(tokens/id_tokens.py), or log (the caller logs the rejection reason; no message here echoes the
token).

Decisions, each pinned by tests/security/test_bearer_*.py:

- Header: exactly one Authorization header. A scheme other than Bearer (Basic, Negotiate, ...) is
  not ours: None. The Bearer scheme must be spelled exactly `Bearer`, followed by one space and an
  RFC 6750 2.1 b64token, and nothing else. `bearer x`, `BEARER x`, `Bearer` and `Bearer ` (trailing
  space), a tab or two spaces are MalformedAuthorization (400). RFC 9110 11.1 makes schemes
  case-insensitive, but every Entra client sends `Bearer`; a variant is more likely a probe for a
  parser differential (one component treats it as a bearer token, another does not) than a client
  we would fail, so it is refused loudly rather than guessed at.
- Parsing happens here, before PyJWT sees the token, and is stricter than PyJWT: a size limit
  first, ASCII only, exactly three non-empty, unpadded, canonical base64url segments (so one token
  has one spelling, for caches keyed on it), UTF-8 JSON objects with no NaN/Infinity and **no
  duplicate member names at any depth**. Python's json keeps the last duplicate, other parsers
  keep the first; a token whose meaning depends on the parser is refused, not interpreted.
  Deeply nested JSON raises RecursionError in json, which is caught like any parse error.
- Algorithm: `alg` must be exactly RS256, the key that `keys(kid)` returns must be an RSA public
  key bound to RS256 (at least 2048 bits), and PyJWT is given `algorithms=["RS256"]`. `jku`,
  `x5u`, `jwk` and `x5c` are never read: keys come only from `keys(kid)`. `crit` and `b64` are
  refused, since no JWS extension is implemented here.
- Time: `exp` and `iat` are required integers; `nbf` is optional. With the policy's leeway
  (at most 300 s): expired, `nbf` in the future and `iat` in the future are refused, and so is a
  token whose `exp` is not after its `iat`. PyJWT's own time checks are off because PyJWT reads
  the wall clock itself; here one `now` (injectable) is used for every rule.
- Issuer: compared here as an exact string, never by PyJWT (CVE-2024-53861 made a str issuer a
  substring match). A template issuer has the token's own `tid` substituted for `{tenantid}`,
  and only when that `tid` is a lower-case GUID; a template needs a tenant allow-list.
- Audience: `aud` must be one string (a list is refused) and a member of the policy's audiences.
- Token type (JW-13): an id token is never a bearer token. An access token has no `nonce`,
  `at_hash` or `c_hash`; names the client it was issued to (`azp` in v2, `appid` in v1; Entra id
  tokens carry neither); and carries a non-empty `scp` (delegated) or a non-empty `roles`
  (application permissions). An app token with no roles grants nothing and is refused.
- Identity (JW-15): tokens/subject.py's `user_key`, the same rule as the browser session's;
  never an email, preferred_username or upn. `identity_claims` keeps
  `email` only when Entra says the domain is verified (`xms_edov`) or the token is from the home
  tenant.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NoReturn

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from gateway.errors import BadRequest, SignInRequired
from gateway.tokens.subject import user_key

ALGORITHM: Final = "RS256"
TENANT_TEMPLATE: Final = "{tenantid}"
MAX_LEEWAY_SECONDS: Final = 300
DEFAULT_MAX_TOKEN_BYTES: Final = 16384

# RFC 9110 11.1: auth-scheme = token (tchar, RFC 9110 5.6.2).
_AUTH_SCHEME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# RFC 6750 2.1: credentials = "Bearer" 1*SP b64token; one SP only, see the module docstring.
_BEARER_CREDENTIALS: Final = re.compile(r"Bearer ([A-Za-z0-9._~+/-]+=*)")
# RFC 7515 2 and 7.1: base64url without padding.
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_-]+")
_GUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# RFC 7515 4.1.9: `typ` is a media type, compared case-insensitively, "application/" optional.
# Entra sends "JWT"; RFC 9068 access tokens say "at+jwt". Anything else (dpop+jwt,
# logout+jwt, secevent+jwt...) is another kind of token signed by the same keys.
_ACCESS_TOKEN_TYPES: Final = frozenset({"jwt", "application/jwt", "at+jwt", "application/at+jwt"})
_ID_TOKEN_CLAIMS: Final = ("nonce", "at_hash", "c_hash")
_CLIENT_CLAIMS: Final = ("azp", "appid")  # v2, v1
# The claims identity headers may carry; `email` is added only when it can be trusted.
_IDENTITY_CLAIMS: Final = (
    *("iss", "tid", "oid", "sub", "azp", "appid", "idtyp", "scp", "roles", "groups"),
    *("name", "preferred_username", "upn"),  # display only: mutable, never a key (nOAuth)
)

_PYJWT_OPTIONS: Final[jwt.types.Options] = {
    "require": ["exp", "iat", "iss", "aud"],
    "verify_signature": True,
    # Checked by this module against one injectable clock; PyJWT reads the wall clock itself.
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    # Checked by this module: exact issuer (CVE-2024-53861) and a single-string audience.
    "verify_iss": False,
    "verify_aud": False,
    # A short RSA key is an error, not an InsecureKeyLengthWarning.
    "enforce_minimum_key_length": True,
}

KeyLookup = Callable[[str | None], jwt.PyJWK | None]
"""The provider's published signing key for a `kid` (None: no `kid` in the header), or None."""


class InvalidBearer(SignInRequired):
    """The bearer token is not acceptable (401, RFC 6750 3.1 `invalid_token`). The message is a
    short fixed reason that never contains the token or any value taken from it."""

    code = "invalid_token"
    title = "Access token rejected"


class UnknownKey(InvalidBearer):
    """The token names a key `keys` does not know. The caller may refetch the JWKS (rate-limited)
    and validate once more; after that it is an InvalidBearer like any other."""


class MalformedAuthorization(BadRequest):
    """The Authorization header breaks RFC 6750 2.1 (400, RFC 6750 3.1 `invalid_request`)."""

    code = "invalid_request"


@dataclass(frozen=True, slots=True)
class BearerPolicy:
    """Which access tokens the gateway accepts. ValueError/TypeError at construction when unsafe.

    `issuers`: exactly as Entra publishes them: concrete (`https://login.microsoftonline.com/<tid>/
    v2.0`, `https://sts.windows.net/<tid>/`) or templates with `{tenantid}`.
    `audiences`: the accepted `aud` values (e.g. `api://gateway` and the client id).
    `allowed_tenants`: tenant ids (lower-case GUIDs); empty means any tenant a concrete issuer
    admits, and is refused when an issuer is a template (that would admit every Entra tenant).
    """

    issuers: tuple[str, ...]
    audiences: frozenset[str]
    allowed_tenants: frozenset[str]
    leeway_seconds: int
    max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES

    def __post_init__(self) -> None:
        # A bare string here would make every membership test a substring test.
        if not isinstance(self.issuers, tuple):
            raise TypeError("BearerPolicy.issuers must be a tuple of issuer strings")
        for field_name in ("audiences", "allowed_tenants"):
            if not isinstance(getattr(self, field_name), frozenset):
                raise TypeError(f"BearerPolicy.{field_name} must be a frozenset of strings")
        if not self.issuers:
            raise ValueError("BearerPolicy.issuers must name at least one issuer")
        for issuer in self.issuers:
            _check_issuer_setting(issuer)
        if not self.audiences or not all(isinstance(a, str) and a for a in self.audiences):
            raise ValueError("BearerPolicy.audiences must name at least one non-empty audience")
        if self.is_multi_tenant and not self.allowed_tenants:
            raise ValueError(
                f"an issuer with {TENANT_TEMPLATE} admits every Entra tenant; set "
                "allowed_tenants to the tenant ids (GUIDs) whose tokens are accepted"
            )
        for tenant in self.allowed_tenants:
            if not isinstance(tenant, str) or not _GUID.fullmatch(tenant):
                raise ValueError(
                    f"allowed tenant {tenant!r} is not a tenant id: tokens name their tenant "
                    "by its lower-case GUID (`tid`), never by a domain name"
                )
        if not _is_int(self.leeway_seconds) or not 0 <= self.leeway_seconds <= MAX_LEEWAY_SECONDS:
            raise ValueError(
                f"BearerPolicy.leeway_seconds must be an integer from 0 to {MAX_LEEWAY_SECONDS}"
            )
        if not _is_int(self.max_token_bytes) or self.max_token_bytes < 1:
            raise ValueError("BearerPolicy.max_token_bytes must be a positive integer")

    @property
    def is_multi_tenant(self) -> bool:
        return any(TENANT_TEMPLATE in issuer for issuer in self.issuers)


def _is_int(value: object) -> bool:
    return type(value) is int  # bool is an int subclass, and not a number of seconds


def _check_issuer_setting(issuer: object) -> None:
    if not isinstance(issuer, str) or not issuer.startswith("https://"):
        raise ValueError(f"issuer {issuer!r} is not an https URL")
    rest = issuer.replace(TENANT_TEMPLATE, "", 1)
    if "{" in rest or "}" in rest:
        raise ValueError(
            f"issuer {issuer!r} may contain {TENANT_TEMPLATE} once and no other braces"
        )


def bearer_from(authorization_values: Sequence[str]) -> str | None:
    """The token of the request's `Authorization: Bearer <token>` header.

    None when there is no Authorization header or it uses another scheme. Raises
    MalformedAuthorization for more than one Authorization header (RFC 9110 5.3: it is not a list
    field), a value with no scheme, or a Bearer header not spelled exactly `Bearer <b64token>`.
    The token itself is not checked here: that is `validate`.
    """
    if not authorization_values:
        return None
    if len(authorization_values) > 1:
        raise MalformedAuthorization("the request has more than one Authorization header")
    value = authorization_values[0]
    scheme = _AUTH_SCHEME.match(value)
    if scheme is None:
        raise MalformedAuthorization("the Authorization header names no scheme")
    if scheme.group().lower() != "bearer":
        return None
    credentials = _BEARER_CREDENTIALS.fullmatch(value)
    if credentials is None:
        raise MalformedAuthorization("the Authorization header is not 'Bearer <token>'")
    return credentials.group(1)


def validate(
    token: str, keys: KeyLookup, policy: BearerPolicy, *, now: float | None = None
) -> dict[str, Any]:
    """The verified claims of an Entra access token, or InvalidBearer with a short reason
    (UnknownKey when `keys` does not know the token's `kid`).

    `keys` is called at most once, with the header's `kid`, and only after the token has parsed;
    what it raises propagates. `now` is epoch seconds (default: the wall clock).
    """
    header = _parse(token, policy.max_token_bytes)
    key = keys(header.get("kid"))
    if key is None:
        raise UnknownKey("the token is signed with an unknown key")
    # JW-03: the key bound to the kid must itself be an RS256 key, whatever the header says.
    if key.algorithm_name != ALGORITHM or not isinstance(key.key, RSAPublicKey):
        raise InvalidBearer("the token's signing key is not an RS256 key")
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[ALGORITHM], options=_PYJWT_OPTIONS
        )
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidBearer(f"the token has no {exc.claim} claim") from exc
    except jwt.InvalidSignatureError as exc:
        raise InvalidBearer("the token's signature is not valid") from exc
    except jwt.InvalidKeyError as exc:
        raise InvalidBearer("the token's signing key is too weak") from exc
    except jwt.PyJWTError as exc:
        raise InvalidBearer(f"the token is not valid ({type(exc).__name__})") from exc
    _check_times(claims, time.time() if now is None else now, policy.leeway_seconds)
    _check_issuer(claims, policy)
    _check_audience(claims, policy)
    _check_access_token(claims)
    try:
        user_key(claims)
    except ValueError as exc:
        raise InvalidBearer("the token names no subject") from exc
    return claims


def identity_claims(claims: Mapping[str, Any], *, home_tenant: str | None = None) -> dict[str, Any]:
    """The claims identity headers may carry: who (oid, tid, sub, iss), which client, display
    names, scopes, roles and groups. `email` only when it can be believed: Entra verified the
    domain (`xms_edov` is true) or the token comes from `home_tenant` (admin-managed). nOAuth."""
    kept = {name: claims[name] for name in _IDENTITY_CLAIMS if name in claims}
    email_trusted = claims.get("xms_edov") is True or (
        home_tenant is not None and claims.get("tid") == home_tenant
    )
    if email_trusted and isinstance(claims.get("email"), str):
        kept["email"] = claims["email"]
    return kept


def _parse(token: str, max_bytes: int) -> dict[str, Any]:
    """The checked JOSE header; the payload and signature segments are checked for shape only."""
    if not isinstance(token, str):
        raise InvalidBearer("the token is not a string")
    # Before any parsing: the cost of everything below is bounded by this.
    if len(token) > max_bytes:
        raise InvalidBearer("the token is too large")
    if not token.isascii():
        raise InvalidBearer("the token is malformed (not ASCII)")
    segments = token.split(".")
    if len(segments) != 3:
        raise InvalidBearer("the token is not a signed JWT (three segments)")
    header_segment, payload_segment, signature_segment = segments
    header = _json_object(_decode_segment(header_segment, "header"), "header")
    _check_header(header)
    # Parsed here, and not only by PyJWT, to refuse duplicate names and unbounded nesting.
    _json_object(_decode_segment(payload_segment, "payload"), "payload")
    _decode_segment(signature_segment, "signature")
    return header


def _decode_segment(segment: str, name: str) -> bytes:
    if not _SEGMENT.fullmatch(segment):
        raise InvalidBearer(f"the token's {name} is not base64url")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidBearer(f"the token's {name} is not base64url") from exc
    # Unused low bits make several spellings of one segment; only the canonical one is accepted.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != segment:
        raise InvalidBearer(f"the token's {name} is not canonical base64url")
    return raw


def _json_object(raw: bytes, name: str) -> dict[str, Any]:
    try:
        # json.loads(bytes) would also guess UTF-16 and UTF-32; RFC 7519 7.2 says UTF-8.
        value = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_unique_members,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    # UnicodeDecodeError and JSONDecodeError are ValueErrors; RecursionError is deep nesting.
    except (ValueError, RecursionError) as exc:
        raise InvalidBearer(f"the token's {name} is not a JSON object") from exc
    if not isinstance(value, dict):
        raise InvalidBearer(f"the token's {name} is not a JSON object")
    return value


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        raise ValueError("duplicate member name")
    return members


def _no_constant(name: str) -> NoReturn:
    raise ValueError("NaN and Infinity are not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _check_header(header: Mapping[str, Any]) -> None:
    # Exact and case-sensitive (RFC 7515 4.1.1): none, HS*, ES*, PS* and RS384/512 are refused.
    if header.get("alg") != ALGORITHM:
        raise InvalidBearer("the token is not signed with RS256")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in _ACCESS_TOKEN_TYPES):
        raise InvalidBearer("the token is not an access token (typ)")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise InvalidBearer("the token's key id is not a string")
    # RFC 7515 4.1.11: an unknown critical extension must be refused; none is implemented.
    if "crit" in header or "b64" in header:
        raise InvalidBearer("the token uses an unsupported JWS extension")


def _numeric_date(claims: Mapping[str, Any], name: str) -> int | None:
    value: object = claims.get(name)
    if value is None:
        return None
    # Strict: Entra sends integers (RFC 7519 NumericDate would allow fractions).
    if type(value) is not int:
        raise InvalidBearer(f"the token's {name} claim is not an integer")
    return value


def _check_times(claims: Mapping[str, Any], now: float, leeway: int) -> None:
    expires, issued, not_before = (_numeric_date(claims, n) for n in ("exp", "iat", "nbf"))
    if expires is None or issued is None:  # required above; kept total for the type checker
        raise InvalidBearer("the token has no exp or iat claim")
    if now > expires + leeway:
        raise InvalidBearer("the token has expired")
    if issued > now + leeway:
        raise InvalidBearer("the token was issued in the future")
    if not_before is not None and not_before > now + leeway:
        raise InvalidBearer("the token is not valid yet")
    if expires <= issued:
        raise InvalidBearer("the token expires before it was issued")


def _expected_issuers(policy: BearerPolicy, tid: object) -> set[str]:
    expected: set[str] = set()
    for issuer in policy.issuers:
        if TENANT_TEMPLATE not in issuer:
            expected.add(issuer)
        # Only a GUID is substituted: `common`, `organizations` or the literal `{tenantid}` in
        # `tid` would otherwise turn the template into a match for a generic issuer.
        elif isinstance(tid, str) and _GUID.fullmatch(tid):
            expected.add(issuer.replace(TENANT_TEMPLATE, tid))
    return expected


def _check_issuer(claims: Mapping[str, Any], policy: BearerPolicy) -> None:
    issuer, tid = claims.get("iss"), claims.get("tid")
    # Exact string equality: no prefix, substring, case folding or trailing-slash forgiveness.
    if not isinstance(issuer, str) or issuer not in _expected_issuers(policy, tid):
        raise InvalidBearer("the token was issued by an unexpected issuer")
    if policy.allowed_tenants and tid not in policy.allowed_tenants:
        raise InvalidBearer("the token's tenant is not allowed")


def _check_audience(claims: Mapping[str, Any], policy: BearerPolicy) -> None:
    audience = claims.get("aud")
    # Entra access tokens have one audience; a list was made by someone else.
    if not isinstance(audience, str):
        raise InvalidBearer("the token's audience is not a single string")
    if audience not in policy.audiences:
        raise InvalidBearer("the token was issued for another audience")


def _check_access_token(claims: Mapping[str, Any]) -> None:
    if any(name in claims for name in _ID_TOKEN_CLAIMS):
        raise InvalidBearer("an id token is not an access token")
    if not any(isinstance(claims.get(n), str) and claims[n] for n in _CLIENT_CLAIMS):
        raise InvalidBearer("the token names no client application (azp or appid)")
    scopes, roles = claims.get("scp"), claims.get("roles")
    if scopes is not None and not isinstance(scopes, str):
        raise InvalidBearer("the token's scp claim is not a string")
    if roles is not None and not (
        isinstance(roles, list) and all(isinstance(r, str) and r for r in roles)
    ):
        raise InvalidBearer("the token's roles claim is not a list of strings")
    if not (scopes and scopes.split()) and not roles:
        raise InvalidBearer("the token carries no scope or application role")
