"""What the upstream is told: inbound headers cleaned of anything spoofable, plus the identity the
gateway vouches for (`vouched_headers`, the one builder used by the proxy and by forward-auth).
Pure functions.

Identity headers are matched after folding case, "_" and "." onto "-", because frameworks (CGI,
PHP, WSGI) fold those spellings onto one variable. They are removed on every route before the
gateway adds its own, and names listed in the client's Connection header are dropped first, so a
client cannot use hop-by-hop rules to remove what the gateway adds.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import re
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.auth.cookies import sets_named_cookie, without_named_cookies
from gateway.auth.identity import Identity, SessionIdentity, email_trusted
from gateway.config.settings import Settings
from gateway.errors import IdentityTooLarge
from gateway.sessions.store import SessionRecord, UpstreamToken

log = logging.getLogger(__name__)

IDENTITY_HEADERS: Final = frozenset(
    {
        "x-ms-client-principal",
        "x-ms-client-principal-name",
        "x-ms-client-principal-id",
        "x-ms-client-principal-idp",
        "x-forwarded-user",
        "x-forwarded-preferred-username",
        "x-forwarded-email",
        "x-forwarded-groups",
        "x-forwarded-access-token",
        "x-auth-request-user",
        "x-auth-request-email",
        "x-auth-request-preferred-username",
        "x-auth-request-groups",
        "x-auth-request-access-token",
        "authorization",
        # Names other gateways use for the signed-in user; legacy apps may trust any of them.
        "x-authenticated-user",
        "x-authenticated-email",
        "x-remote-user",
        "x-remote-email",
        "remote-user",
        "x-webauth-user",
        "x-gateway-assertion",
    }
)
# Whole families a client must never set: Easy Auth principal and token headers.
IDENTITY_PREFIXES: Final = ("x-ms-client-principal", "x-ms-token-")
# Forwarding facts are the gateway's to state; a client's own values are dropped.
FORWARDING_HEADERS: Final = frozenset(
    {
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-real-ip",
        "x-original-url",
        "x-original-uri",
        "x-rewrite-url",
        # Other spellings of scheme, client address and mount point that common servers and
        # libraries trust from a loopback proxy (gunicorn, Rack, Tornado, Rails, request-ip, CDNs).
        "x-forwarded-ssl",
        "x-forwarded-protocol",
        "x-forwarded-scheme",
        "x-forwarded-server",
        "x-forwarded",
        "forwarded-for",
        "x-scheme",
        "x-url-scheme",
        "front-end-https",
        "x-client-ip",
        "client-ip",
        "true-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "x-cluster-client-ip",
        "script-name",
        # How forward-auth proxies name the original request (nginx, Traefik, Envoy, IIS): an app
        # behind the gateway may route or log by them, so only the gateway may state them.
        "x-forwarded-uri",
        "x-forwarded-method",
        "x-forwarded-path",
        "x-original-method",
        "x-original-host",
        "x-original-forwarded-for",
        "x-envoy-original-path",
        "x-envoy-external-address",
        "x-host",
        # Method overrides (Rails, Express method-override, Spring, ASP.NET): the app would run
        # another method than the one the route policy judged (THREATS A5).
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    }
)
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "expect",  # 100-continue is answered per hop
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_FOLD: Final = str.maketrans({"_": "-", ".": "-"})
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def fold(name: str) -> str:
    """The spelling frameworks see: lower case, with "_" and "." turned into "-"."""
    lower = name.lower()
    # translate() looks up every character in a dict: skip it for the usual names.
    return lower.translate(_FOLD) if "_" in lower or "." in lower else lower


def is_identity_header(name: str) -> bool:
    folded = fold(name)
    return folded in IDENTITY_HEADERS or folded.startswith(IDENTITY_PREFIXES)


def connection_tokens(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    """Header names the client's Connection header lists (they are hop-by-hop by declaration)."""
    return _listed(headers.getall("Connection", []))


def _listed(connection_values: Iterable[str]) -> frozenset[str]:
    return frozenset(
        fold(token.strip())
        for value in connection_values
        for token in value.split(",")
        if token.strip()
    )


def inbound_headers(
    headers: CIMultiDictProxy[str],
    *,
    cookie_names: frozenset[str],
    also_drop: frozenset[str] = frozenset(),
) -> CIMultiDict[str]:
    """The client's headers minus hop-by-hop ones, identity and forwarding headers in every
    spelling, the Host header (set by the forwarder), the gateway's own cookies, and the
    `also_drop` names (folded, see fold()) the operator configured for the gateway to send."""
    dropped = connection_tokens(headers) if "Connection" in headers else frozenset()
    if also_drop:
        dropped = dropped | also_drop
    kept: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        verdict = _inbound_verdict(name)
        if verdict is _DROP or (dropped and fold(name) in dropped):
            continue
        if verdict is _COOKIE:
            value = without_named_cookies(value, cookie_names)
            if not value:
                continue
        kept.add(name, value)
    return kept


_KEEP: Final = "keep"
_DROP: Final = "drop"
_COOKIE: Final = "cookie"


@functools.lru_cache(maxsize=2048)
def _inbound_verdict(name: str) -> str:
    """What happens to an inbound header of this name (a client's Connection list aside).
    Cached: the same few dozen names arrive on every request."""
    folded = fold(name)
    if (
        folded in HOP_BY_HOP
        or folded in FORWARDING_HEADERS
        or folded == "host"
        or is_identity_header(name)
    ):
        return _DROP
    return _COOKIE if folded == "cookie" else _KEEP


def _claim_values(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [v for item in value for v in _claim_values(item)]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, dict):
        return [json.dumps(value, separators=(",", ":"), ensure_ascii=False)]
    return [str(value)]


def easy_auth_principal(claims: Mapping[str, Any]) -> dict[str, Any]:
    """The Easy Auth principal: auth_typ, claims as {typ, val} pairs (lists flattened), and the
    claim types that hold the name and the roles."""
    return {
        "auth_typ": "aad",
        "claims": [
            {"typ": typ, "val": val}
            for typ, value in claims.items()
            for val in _claim_values(value)
        ],
        "name_typ": "name",
        "role_typ": "roles",
    }


def _plain(name: str, value: Any) -> str | None:
    """A claim as a plain header value, or None when it is absent or cannot travel safely."""
    values = _claim_values(value)
    if not values:
        return None
    if name == "groups" and any("," in item for item in values):
        # X-Forwarded-Groups is a comma-separated list: a group name "a,b" would read as groups
        # "a" and "b", alone or with others; the base64 principal still carries it as issued.
        log.warning("a %s value contains a comma; header not sent", name)
        return None
    text = ",".join(values)
    if _CONTROL.search(text):
        # CR/LF/NUL in a claim would split or corrupt the header: leave it out (the base64
        # principal still carries it) rather than send a "cleaned" value that means something else.
        log.warning("claim for %s contains control characters; header not sent", name)
        return None
    return text


def _encoded_principal(claims: Mapping[str, Any]) -> str:
    return base64.b64encode(
        json.dumps(easy_auth_principal(claims), separators=(",", ":")).encode()
    ).decode()


def identity_headers(
    claims: Mapping[str, Any],
    *,
    email_trusted: bool,
    access_token: str | None,
    groups: tuple[str, ...] | None = None,
    max_bytes: int = 8000,
) -> list[tuple[str, str]]:
    """The identity headers for a signed-in user (DESIGN.md). Headers whose claim is absent are
    not sent. X-Forwarded-Email is sent only when the email claim can be trusted (nOAuth).
    `groups` (resolved through Graph for an overage token) replaces the token's groups claim in
    X-Forwarded-Groups; the principal keeps the token's claims as issued, as Easy Auth does. A
    header longer than `max_bytes` is left out, never cut: a partial group list could grant.
    IdentityTooLarge when the principal does not fit even without its groups."""
    principal = _encoded_principal(claims)
    if len(principal) > max_bytes and "groups" in claims:
        # Easy Auth's answer to "too many groups": the principal without them (X-Forwarded-Groups
        # still carries them if it fits).
        principal = _encoded_principal({k: v for k, v in claims.items() if k != "groups"})
    if len(principal) > max_bytes:
        # Forwarding the request without the identity the app relies on could let it treat a
        # signed-in user as anonymous (or as whatever a default is): refuse instead.
        log.error(
            "X-MS-CLIENT-PRINCIPAL is %d bytes without groups, over "
            "GATEWAY_GROUPS__MAX_HEADER_BYTES=%d: request refused",
            len(principal),
            max_bytes,
        )
        raise IdentityTooLarge(
            "your identity is larger than this gateway may pass to the application; "
            "the administrator can raise GATEWAY_GROUPS__MAX_HEADER_BYTES"
        )
    user_id = claims.get("oid") or claims.get("sub")
    candidates = [
        ("X-MS-CLIENT-PRINCIPAL", principal),
        (
            "X-MS-CLIENT-PRINCIPAL-NAME",
            _plain("preferred_username", claims.get("preferred_username")),
        ),
        ("X-MS-CLIENT-PRINCIPAL-ID", _plain("oid", user_id)),
        ("X-MS-CLIENT-PRINCIPAL-IDP", "aad"),
        ("X-Forwarded-User", _plain("oid", user_id)),
        (
            "X-Forwarded-Preferred-Username",
            _plain("preferred_username", claims.get("preferred_username")),
        ),
        ("X-Forwarded-Email", _plain("email", claims.get("email")) if email_trusted else None),
        (
            "X-Forwarded-Groups",
            _plain("groups", list(groups) if groups is not None else claims.get("groups")),
        ),
        ("Authorization", f"Bearer {access_token}" if access_token else None),
    ]
    sent = []
    for name, value in candidates:
        if value is None:
            continue
        if len(value) > max_bytes:
            log.warning(
                "%s is %d bytes, over the limit of %d: not sent", name, len(value), max_bytes
            )
            continue
        sent.append((name, value))
    return sent


def vouched_headers(
    identity: Identity,
    scopes: tuple[str, ...],
    settings: Settings,
    *,
    with_token: bool,
    with_token_store: bool,
    api_caller_token: str | None = None,
) -> list[tuple[str, str]]:
    """Everything the gateway vouches for about `identity`, the one builder for the proxy and for
    forward-auth (auth/access.py says how they differ). A session's access token for `scopes`
    goes in Authorization only `with_token`; an API caller's Authorization is `api_caller_token`
    (what its request carries upstream, if anything); `with_token_store` adds App Service's
    token-store headers for a session when GATEWAY_TOKENS__EASY_AUTH_TOKEN_HEADERS is on."""
    session = identity.record if isinstance(identity, SessionIdentity) else None
    token = session.token(scopes) if session is not None and scopes else None
    if session is None:
        access_token = api_caller_token
    else:
        access_token = token.access_token if token is not None and with_token else None
    vouched = identity_headers(
        identity.claims,
        email_trusted=email_trusted(identity.claims, settings.is_multi_tenant),
        access_token=access_token,
        groups=identity.groups,
        max_bytes=settings.groups.max_header_bytes,
    )
    for header, claim in settings.proxy.claim_headers.items():
        value = _plain(claim, identity.claims.get(claim))
        if value is not None and len(value) <= settings.groups.max_header_bytes:
            vouched.append((header, value))
    if session is not None and with_token_store and settings.tokens.easy_auth_token_headers:
        vouched.extend(easy_auth_token_headers(session, token))
    return vouched


def easy_auth_token_headers(
    record: SessionRecord, token: UpstreamToken | None
) -> list[tuple[str, str]]:
    """App Service's token-store headers, for apps that read them."""
    headers = []
    if record.id_token:
        headers.append(("X-MS-TOKEN-AAD-ID-TOKEN", record.id_token))
    if token is not None:
        expires = datetime.fromtimestamp(token.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        headers.append(("X-MS-TOKEN-AAD-ACCESS-TOKEN", token.access_token))
        headers.append(("X-MS-TOKEN-AAD-EXPIRES-ON", expires))
    return headers


def assertion_claims(identity: Identity, *, multi_tenant: bool) -> dict[str, object]:
    """The identity a signed assertion vouches for (groups as resolved, email only if trusted)."""
    claims: dict[str, object] = {
        name: identity.claims[name]
        for name in ("oid", "tid", "sub", "name", "preferred_username", "roles")
        if name in identity.claims
    }
    if email_trusted(identity.claims, multi_tenant) and "email" in identity.claims:
        claims["email"] = identity.claims["email"]
    groups = identity.groups if identity.groups is not None else identity.claims.get("groups")
    if groups:
        claims["groups"] = list(groups)
    return claims


def response_headers(
    headers: Iterable[tuple[str, str]], *, own_cookies: frozenset[str] = frozenset()
) -> CIMultiDict[str]:
    """The upstream's response headers minus hop-by-hop ones (and those its Connection names),
    and minus any Set-Cookie for the gateway's own cookies: the application cannot plant or
    clear a session (session fixation through the upstream)."""
    items = list(headers)
    dropped = _listed(value for name, value in items if _outbound_verdict(name) is _CONNECTION)
    kept: CIMultiDict[str] = CIMultiDict()
    for name, value in items:
        verdict = _outbound_verdict(name)
        if verdict is _DROP or verdict is _CONNECTION or (dropped and fold(name) in dropped):
            continue
        if verdict is _COOKIE and sets_named_cookie(value, own_cookies):
            continue
        kept.add(name, value)
    return kept


_CONNECTION: Final = "connection"


@functools.lru_cache(maxsize=2048)
def _outbound_verdict(name: str) -> str:
    """What happens to a response header of this name (cached, as for requests)."""
    folded = fold(name)
    if folded == "connection":
        return _CONNECTION  # hop-by-hop itself, and it names others
    if folded in HOP_BY_HOP:
        return _DROP
    return _COOKIE if folded == "set-cookie" else _KEEP


_TRACEPARENT: Final = re.compile(r"^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")


def traceparent(incoming: str | None) -> str:
    """The W3C trace context for the upstream: the client's when well-formed, else a new one."""
    if incoming is not None and _TRACEPARENT.match(incoming):
        return incoming
    ids = secrets.token_hex(24)  # one read of the system's randomness for both ids
    return f"00-{ids[:32]}-{ids[32:]}-01"
