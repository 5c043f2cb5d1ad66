"""What the upstream is told (THREATS.md A4, DESIGN.md "Headers sent upstream"): inbound headers
cleaned of identity, forwarding and hop-by-hop headers in every spelling, the gateway's cookies
hidden, the identity headers built from claims, and the upstream's response headers filtered.
Pure functions of gateway.auth.headers only.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy
from support.gateway import SESSION_COOKIE, SIGNIN_COOKIE

from gateway.auth.headers import (
    fold,
    identity_headers,
    inbound_headers,
    is_identity_header,
    response_headers,
)

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
FORGED_PRINCIPAL: Final = base64.b64encode(
    json.dumps(
        {"auth_typ": "aad", "claims": [{"typ": "roles", "val": "admin"}], "name_typ": "name"}
    ).encode()
).decode()
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


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


# ---- inbound: identity headers (HD-01, HD-03) ----


@pytest.mark.parametrize("name", sorted({s for n in IDENTITY_NAMES for s in spellings(n)}), ids=str)
def test_hd01_identity_header_is_removed_in_every_spelling(name: str) -> None:
    kept = clean([(name, "admin"), ("Accept", "text/html")])
    assert list(kept.items()) == [("Accept", "text/html")]
    assert is_identity_header(name)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Forwarded-User", "admin"),
        ("X-Forwarded-Email", "admin@yourco.com"),
        ("X-Forwarded-Groups", "admins,owners"),
        ("X-MS-CLIENT-PRINCIPAL", FORGED_PRINCIPAL),
        ("X-MS-CLIENT-PRINCIPAL-NAME", "admin@yourco.com"),
        ("X-MS-CLIENT-PRINCIPAL-ID", "00000000-0000-0000-0000-000000000001"),
        ("X-MS-CLIENT-PRINCIPAL-IDP", "aad"),
        ("X-MS-TOKEN-AAD-ACCESS-TOKEN", "eyJhbGciOiJub25lIn0.e30."),
        ("Authorization", "Bearer forged"),
        ("authorization", "Basic YWRtaW46YWRtaW4="),
        ("X_Forwarded_User", "admin"),
        ("X.Forwarded.User", "admin"),
        ("x-ms-client_principal-name", "admin"),
        ("X.MS.CLIENT.PRINCIPAL", FORGED_PRINCIPAL),
    ],
)
def test_hd01_forged_identity_values_never_reach_the_upstream(name: str, value: str) -> None:
    kept = clean([(name, value), (name, value), ("X-Request-Thing", "ok")])
    assert list(kept.items()) == [("X-Request-Thing", "ok")]
    assert value not in kept.values()


@pytest.mark.parametrize(
    "name",
    ["X.Forwarded.User", "X.Authenticated.User", "x.authenticated.user", "X_Authenticated_User"],
)
def test_hd03_dot_aliases_are_removed(name: str) -> None:
    assert clean([(name, "admin")]) == CIMultiDict()


def test_hd01_all_identity_headers_together_leave_only_ordinary_ones() -> None:
    forged = [(name, "forged") for name in IDENTITY_NAMES]
    kept = clean([*forged, ("Accept-Language", "en"), ("X-App-Trace", "t1")])
    assert list(kept.items()) == [("Accept-Language", "en"), ("X-App-Trace", "t1")]


@pytest.mark.parametrize(
    "name",
    ["X-Forwarded-Userx", "X-User-Agent-Hint", "X-MS-Request-Id", "Authorization2"],
)
def test_names_that_only_resemble_identity_headers_are_kept(name: str) -> None:
    assert list(clean([(name, "v")]).items()) == [(name, "v")]
    assert not is_identity_header(name)


@pytest.mark.parametrize(
    ("name", "folded"),
    [
        ("X_Forwarded_User", "x-forwarded-user"),
        ("X.Forwarded.User", "x-forwarded-user"),
        ("x-ms-client_principal-name", "x-ms-client-principal-name"),
        ("AUTHORIZATION", "authorization"),
        ("Content-Type", "content-type"),
    ],
)
def test_fold_is_what_cgi_style_frameworks_see(name: str, folded: str) -> None:
    assert fold(name) == folded


_SEPARATOR_OR_CASE: Final = {"-": st.sampled_from(["-", "_", "."])}


def _respelled(name: str) -> st.SearchStrategy[str]:
    parts = [
        _SEPARATOR_OR_CASE.get(c, st.sampled_from(sorted({c.lower(), c.upper()}))) for c in name
    ]
    return st.tuples(*parts).map("".join)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(st.sampled_from(IDENTITY_NAMES + FORWARDING_NAMES).flatmap(_respelled), st.booleans())
def test_random_respelling_of_an_identity_or_forwarding_header_is_never_kept(
    name: str, listed_in_connection: bool
) -> None:
    items = [(name, "forged"), ("X-Keep", "yes")]
    if listed_in_connection:
        items.append(("Connection", f"keep-alive, {name}"))
    assert list(clean(items).items()) == [("X-Keep", "yes")]


# ---- inbound: Connection abuse (HD-05), forwarding (HD-07, HD-09), hop-by-hop ----


@pytest.mark.parametrize(
    "connection",
    [
        "close, X-Forwarded-User",
        "X-MS-CLIENT-PRINCIPAL, X-Forwarded-For",
        "Authorization",
        "x_forwarded_email,  X.MS.CLIENT.PRINCIPAL.NAME ,",
    ],
)
def test_hd05_connection_header_cannot_keep_client_identity_or_remove_the_gateways(
    connection: str,
) -> None:
    kept = clean(
        [
            ("Connection", connection),
            ("X-Forwarded-User", "admin"),
            ("X-MS-CLIENT-PRINCIPAL", FORGED_PRINCIPAL),
            ("X-Forwarded-For", "127.0.0.1"),
            ("Accept", "*/*"),
        ]
    )
    assert list(kept.items()) == [("Accept", "*/*")]
    # What the proxy then adds is not subject to the client's Connection header.
    kept.extend(identity_headers({"oid": "real-oid"}, email_trusted=False, access_token="at"))
    assert kept.getall("X-Forwarded-User") == ["real-oid"]
    assert kept.getall("Authorization") == ["Bearer at"]
    assert len(kept.getall("X-MS-CLIENT-PRINCIPAL")) == 1


def test_hd05_ordinary_headers_named_by_connection_are_dropped() -> None:
    kept = clean(
        [
            ("Connection", "X-Custom, x_other"),
            ("Connection", "Keep-Alive"),
            ("X-Custom", "1"),
            ("X-Other", "2"),
            ("X-Untouched", "3"),
        ]
    )
    assert list(kept.items()) == [("X-Untouched", "3")]


@pytest.mark.parametrize(
    "name", sorted({s for n in FORWARDING_NAMES for s in spellings(n)}), ids=str
)
def test_hd07_hd09_client_forwarding_headers_are_dropped(name: str) -> None:
    kept = clean([(name, "https"), (name, "127.0.0.1, 10.0.0.1"), ("Accept", "*/*")])
    assert list(kept.items()) == [("Accept", "*/*")]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Port", "443"),
        ("X-Forwarded-Host", "admin.internal"),
        ("X-Forwarded-For", "127.0.0.1, 10.0.0.1"),
        ("Forwarded", "for=127.0.0.1;proto=https;host=admin.internal"),
        ("X-Real-IP", "127.0.0.1"),
    ],
)
def test_hd07_hd09_spoofed_forwarding_facts_are_not_passed_on(name: str, value: str) -> None:
    assert name not in clean([(name, value)])


# Other client-IP, scheme and path headers that widely used servers and libraries trust when the
# request comes from a loopback proxy, as the gateway's does (HD-07, HD-09: the whole category).
TRUSTED_ELSEWHERE: Final = [
    pytest.param("X-Forwarded-Ssl", "on", id="gunicorn-secure-scheme-default+rack"),
    pytest.param("X-Forwarded-Protocol", "ssl", id="gunicorn-secure-scheme-default"),
    pytest.param("X-Forwarded-Scheme", "https", id="rack"),
    pytest.param("X-Scheme", "https", id="tornado-xheaders"),
    pytest.param("X-Client-IP", "127.0.0.1", id="request-ip-first-choice"),
    pytest.param("Client-IP", "127.0.0.1", id="rails-remote-ip"),
    pytest.param("True-Client-IP", "127.0.0.1", id="request-ip"),
    pytest.param("CF-Connecting-IP", "127.0.0.1", id="request-ip-cloudflare"),
    pytest.param("Fastly-Client-IP", "127.0.0.1", id="request-ip-fastly"),
    pytest.param("X-Cluster-Client-IP", "127.0.0.1", id="request-ip-cluster"),
    pytest.param("Forwarded-For", "127.0.0.1", id="request-ip-forwarded-for"),
    pytest.param("X-Forwarded", "for=127.0.0.1", id="request-ip-x-forwarded"),
    pytest.param("SCRIPT_NAME", "/admin", id="gunicorn-script-name-2650"),
]


@pytest.mark.parametrize(("name", "value"), TRUSTED_ELSEWHERE)
def test_hd07_hd09_client_ip_scheme_and_prefix_headers_other_stacks_trust_are_dropped(
    name: str, value: str
) -> None:
    kept = clean([(name, value), ("Accept", "*/*")])
    assert list(kept.items()) == [("Accept", "*/*")]


@pytest.mark.parametrize("name", [*HOP_BY_HOP_NAMES, "HOST", "host", "Host"])
def test_hop_by_hop_headers_and_host_are_removed(name: str) -> None:
    kept = clean([(name, "x"), ("Content-Type", "application/json")])
    assert list(kept.items()) == [("Content-Type", "application/json")]


def test_ordinary_headers_keep_their_order_case_and_repeats() -> None:
    items = [
        ("Accept", "text/html"),
        ("X-Multi", "a"),
        ("user-agent", "curl/8"),
        ("X-Multi", "b"),
        ("Content-Length", "3"),
    ]
    assert list(clean(items).items()) == items


# ---- inbound: the gateway's own cookies ----


@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        ("theme=dark; lang=en", "theme=dark; lang=en"),
        ("theme=dark;lang=en", "theme=dark;lang=en"),
        (f"a=1; {SESSION_COOKIE}=sess; b=2", "a=1; b=2"),
        (f"{SESSION_COOKIE}=sess; a=1", "a=1"),
        (f"a=1; {SIGNIN_COOKIE}=bind", "a=1"),
        (f'a=1; {SESSION_COOKIE}=s; {SIGNIN_COOKIE}=b; c="q v"', 'a=1; c="q v"'),
        (f"{SESSION_COOKIE}=x; {SESSION_COOKIE}=y; keep=%20z", "keep=%20z"),
        (f" {SESSION_COOKIE} = padded ; k=v", "k=v"),
        (f"{SESSION_COOKIE}-other=1; msal-gateway=2", f"{SESSION_COOKIE}-other=1; msal-gateway=2"),
        ("empty=; flag", "empty=; flag"),
    ],
)
def test_gateway_cookies_are_removed_and_others_keep_their_exact_bytes(
    cookie: str, expected: str
) -> None:
    assert clean([("Cookie", cookie)]).getall("Cookie") == [expected]


@pytest.mark.parametrize(
    "cookie",
    [
        f"{SESSION_COOKIE}=sess",
        f"{SESSION_COOKIE}=sess; {SIGNIN_COOKIE}=bind",
        f"{SIGNIN_COOKIE}=bind;",
    ],
)
def test_cookie_header_with_only_gateway_cookies_is_dropped(cookie: str) -> None:
    assert "Cookie" not in clean([("Cookie", cookie), ("Accept", "*/*")])


def test_each_cookie_header_is_filtered_separately() -> None:
    kept = clean([("Cookie", f"a=1; {SESSION_COOKIE}=s"), ("Cookie", f"{SIGNIN_COOKIE}=b; c=3")])
    assert kept.getall("Cookie") == ["a=1", "c=3"]


# ---- identity headers from claims (DESIGN.md, HD-13, JW-15) ----

FULL_CLAIMS: Final[dict[str, Any]] = {
    "oid": "11111111-2222-3333-4444-555555555555",
    "sub": "subject-value",
    "tid": "tenant-id",
    "name": "Ada Lovelace",
    "preferred_username": "ada@contoso.com",
    "email": "ada@contoso.com",
    "groups": ["g1", "g2"],
    "roles": ["Reader", "Writer"],
}


def test_signed_in_user_gets_every_design_header() -> None:
    headers = as_dict(identity_headers(FULL_CLAIMS, email_trusted=True, access_token="at-123"))
    assert set(headers) == {
        "X-MS-CLIENT-PRINCIPAL",
        "X-MS-CLIENT-PRINCIPAL-NAME",
        "X-MS-CLIENT-PRINCIPAL-ID",
        "X-MS-CLIENT-PRINCIPAL-IDP",
        "X-Forwarded-User",
        "X-Forwarded-Preferred-Username",
        "X-Forwarded-Email",
        "X-Forwarded-Groups",
        "Authorization",
    }
    assert headers["X-MS-CLIENT-PRINCIPAL-NAME"] == "ada@contoso.com"
    assert headers["X-MS-CLIENT-PRINCIPAL-ID"] == FULL_CLAIMS["oid"]
    assert headers["X-MS-CLIENT-PRINCIPAL-IDP"] == "aad"
    assert headers["X-Forwarded-User"] == FULL_CLAIMS["oid"]
    assert headers["X-Forwarded-Preferred-Username"] == "ada@contoso.com"
    assert headers["X-Forwarded-Email"] == "ada@contoso.com"
    assert headers["X-Forwarded-Groups"] == "g1,g2"
    assert headers["Authorization"] == "Bearer at-123"


def test_every_emitted_header_is_an_identity_header_the_inbound_side_strips() -> None:
    for name, _ in identity_headers(FULL_CLAIMS, email_trusted=True, access_token="at"):
        assert is_identity_header(name), name


def test_principal_json_has_the_easy_auth_shape_with_list_claims_flattened() -> None:
    headers = as_dict(identity_headers(FULL_CLAIMS, email_trusted=True, access_token=None))
    principal = decode_principal(headers["X-MS-CLIENT-PRINCIPAL"])
    assert principal["auth_typ"] == "aad"
    assert principal["name_typ"] == "name"
    assert principal["role_typ"] == "roles"
    claims = principal["claims"]
    assert all(set(claim) == {"typ", "val"} for claim in claims)
    assert all(isinstance(claim["val"], str) for claim in claims)
    pairs = [(claim["typ"], claim["val"]) for claim in claims]
    assert ("roles", "Reader") in pairs
    assert ("roles", "Writer") in pairs
    assert ("groups", "g1") in pairs
    assert ("groups", "g2") in pairs
    assert ("name", "Ada Lovelace") in pairs
    assert ("oid", FULL_CLAIMS["oid"]) in pairs


@pytest.mark.parametrize(
    ("email_trusted", "present"), [(True, True), (False, False)], ids=["trusted", "untrusted"]
)
def test_email_header_only_when_the_email_claim_is_trusted(
    email_trusted: bool, present: bool
) -> None:
    headers = as_dict(identity_headers(FULL_CLAIMS, email_trusted=email_trusted, access_token=None))
    assert ("X-Forwarded-Email" in headers) is present
    # The principal still carries the claim for applications that read it knowingly.
    pairs = [
        (c["typ"], c["val"]) for c in decode_principal(headers["X-MS-CLIENT-PRINCIPAL"])["claims"]
    ]
    assert ("email", "ada@contoso.com") in pairs


@pytest.mark.parametrize(
    ("claims", "access_token", "absent"),
    [
        ({"oid": "o"}, None, {"X-MS-CLIENT-PRINCIPAL-NAME", "X-Forwarded-Preferred-Username"}),
        ({"oid": "o"}, None, {"X-Forwarded-Email", "X-Forwarded-Groups", "Authorization"}),
        ({"oid": "o", "groups": []}, None, {"X-Forwarded-Groups"}),
        ({"oid": "o", "email": None}, None, {"X-Forwarded-Email"}),
        ({"oid": "o"}, "", {"Authorization"}),
        ({"name": "no id at all"}, None, {"X-MS-CLIENT-PRINCIPAL-ID", "X-Forwarded-User"}),
    ],
)
def test_headers_whose_claim_is_absent_are_not_sent(
    claims: dict[str, Any], access_token: str | None, absent: set[str]
) -> None:
    headers = as_dict(identity_headers(claims, email_trusted=True, access_token=access_token))
    assert absent.isdisjoint(headers)
    assert headers["X-MS-CLIENT-PRINCIPAL-IDP"] == "aad"
    assert "X-MS-CLIENT-PRINCIPAL" in headers


@pytest.mark.parametrize(
    ("claims", "expected_id"),
    [
        ({"sub": "provider-sub"}, "provider-sub"),
        ({"oid": "entra-oid", "sub": "provider-sub"}, "entra-oid"),
        ({"oid": "", "sub": "provider-sub"}, "provider-sub"),
    ],
)
def test_principal_id_is_oid_and_falls_back_to_sub(
    claims: dict[str, Any], expected_id: str
) -> None:
    headers = as_dict(identity_headers(claims, email_trusted=False, access_token=None))
    assert headers["X-MS-CLIENT-PRINCIPAL-ID"] == expected_id
    assert headers["X-Forwarded-User"] == expected_id


INJECTIONS: Final = [
    "ada\r\nX-Admin: 1",
    "ada\nX-Admin: 1",
    "ada\rX-Admin: 1",
    "ada\x00admin",
    "\r\n\r\n<html>",
]


@pytest.mark.parametrize("value", INJECTIONS, ids=ascii)
@pytest.mark.parametrize(
    ("claim", "headers_fed"),
    [
        ("preferred_username", {"X-MS-CLIENT-PRINCIPAL-NAME", "X-Forwarded-Preferred-Username"}),
        ("oid", {"X-MS-CLIENT-PRINCIPAL-ID", "X-Forwarded-User"}),
        ("email", {"X-Forwarded-Email"}),
        ("groups", {"X-Forwarded-Groups"}),
    ],
)
def test_hd13_claim_with_control_characters_is_not_emitted_as_a_plain_header(
    value: str, claim: str, headers_fed: set[str]
) -> None:
    claims: dict[str, Any] = {"sub": "s", "preferred_username": "ok", "email": "ok@x"}
    claims[claim] = ["fine", value] if claim == "groups" else value
    headers = identity_headers(claims, email_trusted=True, access_token=None)
    names = {name for name, _ in headers}
    assert headers_fed.isdisjoint(names)
    assert "X-Admin" not in names
    for name, text in headers:
        assert not _CONTROL.search(name + text), name
    # The base64 principal still carries the value exactly.
    principal = decode_principal(dict(headers)["X-MS-CLIENT-PRINCIPAL"])
    assert {"typ": claim, "val": value} in principal["claims"]


@pytest.mark.parametrize(
    "text",
    [
        "José",
        "Zoë Ñúñez",
        "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
        "\u0645\u0631\u062d\u0628\u0627",
        "\u202egnp.exe",
        "<script>alert(1)</script>",
        "\U0001f600 \u4e2d\u6587",
    ],
    ids=ascii,
)
def test_hd13_non_ascii_and_markup_round_trip_in_the_base64_principal(text: str) -> None:
    headers = as_dict(
        identity_headers({"oid": "o", "name": text}, email_trusted=False, access_token=None)
    )
    encoded = headers["X-MS-CLIENT-PRINCIPAL"]
    assert encoded.isascii()
    assert {"typ": "name", "val": text} in decode_principal(encoded)["claims"]


def test_hd13_plain_header_values_never_contain_line_breaks_on_the_wire() -> None:
    claims: dict[str, Any] = {
        "oid": "o",
        "preferred_username": "\u560a\u560d",  # UTF-16 units whose low bytes are LF and CR
        "groups": ["a\u2028b", "c\u0085d"],
        "email": "x@\u0130.example",
    }
    for name, value in identity_headers(claims, email_trusted=True, access_token="t"):
        wire = value.encode("utf-8")
        assert b"\r" not in wire and b"\n" not in wire and b"\x00" not in wire, name


# ---- response headers ----


def test_response_keeps_every_set_cookie_in_order() -> None:
    kept = response_headers(
        [
            ("Content-Type", "text/html"),
            ("Set-Cookie", "a=1; Path=/"),
            ("Set-Cookie", "b=2; Path=/; HttpOnly"),
            ("set-cookie", "c=3"),
        ]
    )
    assert kept.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly", "c=3"]
    assert kept["Content-Type"] == "text/html"


@pytest.mark.parametrize("name", HOP_BY_HOP_NAMES)
def test_response_hop_by_hop_headers_are_dropped(name: str) -> None:
    kept = response_headers([(name, "x"), ("Cache-Control", "no-store")])
    assert list(kept.items()) == [("Cache-Control", "no-store")]


@pytest.mark.parametrize(
    "connection", ["X-Internal", "close, x-internal", "X_Internal", "keep-alive,X.Internal"]
)
def test_response_headers_named_by_connection_are_dropped(connection: str) -> None:
    kept = response_headers(
        [("Connection", connection), ("X-Internal", "secret"), ("ETag", '"v1"')]
    )
    assert list(kept.items()) == [("ETag", '"v1"')]


@pytest.mark.parametrize(
    "set_cookie",
    [
        f"{SESSION_COOKIE}=planted; Path=/; Secure; HttpOnly",
        f"{SIGNIN_COOKIE}=planted",
        f" {SESSION_COOKIE} =planted",
        f"{SESSION_COOKIE}=; Max-Age=0",
    ],
)
def test_response_cannot_set_or_clear_the_gateways_cookies(set_cookie: str) -> None:
    kept = response_headers(
        [("Set-Cookie", set_cookie), ("Set-Cookie", "app=1")], own_cookies=OWN_COOKIES
    )
    assert kept.getall("Set-Cookie") == ["app=1"]
