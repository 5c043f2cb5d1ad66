"""Header tests' shared ground: the header names the gateway reserves (DESIGN.md "Headers sent
upstream", the forwarding family and the hop-by-hop set, written out here as the oracle that
gateway.auth.headers is checked against, never taken from it), and small helpers around its
pure functions."""

from __future__ import annotations

import base64
import json
from typing import Any, Final

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.auth.headers import inbound_headers
from support.gateway import SESSION_COOKIE, SIGNIN_COOKIE

OWN_COOKIES: Final = frozenset({SESSION_COOKIE, SIGNIN_COOKIE})


# DESIGN.md "Headers sent upstream", plus the Easy Auth token family and the oauth2-proxy names.
IDENTITY_NAMES: Final = (
    "X-MS-CLIENT-PRINCIPAL",
    "X-MS-CLIENT-PRINCIPAL-NAME",
    "X-MS-CLIENT-PRINCIPAL-ID",
    "X-MS-CLIENT-PRINCIPAL-IDP",
    "X-MS-CLIENT-PRINCIPAL-ROLES",
    "X-MS-TOKEN-AAD-ACCESS-TOKEN",
    "X-MS-TOKEN-AAD-ID-TOKEN",
    "X-MS-TOKEN-AAD-REFRESH-TOKEN",
    "X-MS-TOKEN-AAD-EXPIRES-ON",
    "X-Forwarded-User",
    "X-Forwarded-Preferred-Username",
    "X-Forwarded-Email",
    "X-Forwarded-Groups",
    "X-Forwarded-Access-Token",
    "X-Auth-Request-User",
    "X-Auth-Request-Email",
    "X-Auth-Request-Preferred-Username",
    "X-Auth-Request-Groups",
    "X-Auth-Request-Access-Token",
    "X-Authenticated-User",
    "X-Authenticated-Email",
    "X-Remote-User",
    "Remote-User",
    "X-WebAuth-User",
    "Authorization",
)


FORWARDING_NAMES: Final = (
    "X-Forwarded-Proto",
    "X-Forwarded-Port",
    "X-Forwarded-Host",
    "X-Forwarded-For",
    "X-Forwarded-Prefix",
    "Forwarded",
    "X-Real-IP",
    "X-Original-URL",
    "X-Original-URI",
    "X-Rewrite-URL",
    # Issue 14 item 9: the forward-auth names of the original request, and method overrides.
    "X-Forwarded-Uri",
    "X-Forwarded-Method",
    "X-Forwarded-Path",
    "X-Original-Method",
    "X-Original-Host",
    "X-Original-Forwarded-For",
    "X-Envoy-Original-Path",
    "X-Envoy-External-Address",
    "X-Host",
    "X-HTTP-Method-Override",
    "X-HTTP-Method",
    "X-Method-Override",
)


HOP_BY_HOP_NAMES: Final = (
    "Connection",
    "Expect",
    "Keep-Alive",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Connection",
    "TE",
    "Trailer",
    "Transfer-Encoding",
    "Upgrade",
)


def proxy_of(items: list[tuple[str, str]]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(items))


def clean(items: list[tuple[str, str]]) -> CIMultiDict[str]:
    return inbound_headers(proxy_of(items), cookie_names=OWN_COOKIES)


def spellings(name: str) -> list[str]:
    """The spellings a downstream framework folds onto the same variable (case, "_", ".")."""
    mixed = "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(name))
    return [
        name,
        name.upper(),
        name.lower(),
        mixed,
        name.replace("-", "_"),
        name.replace("-", "."),
        name.upper().replace("-", "_"),
        name.lower().replace("-", "."),
        "".join("_" if c == "-" and i % 2 else c for i, c in enumerate(name)),
        "".join("." if c == "-" and i % 3 else c for i, c in enumerate(name)),
    ]


def decode_principal(value: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.b64decode(value, validate=True))
    return decoded


def as_dict(headers: list[tuple[str, str]]) -> dict[str, str]:
    names = [name for name, _ in headers]
    assert len(names) == len(set(names)), "a header is emitted twice"
    return dict(headers)
