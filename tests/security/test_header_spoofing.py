"""Header spoofing and the trust boundary (THREATS.md A4: HD-01 to HD-13): identity, forwarding
and hop-by-hop headers a client sends never reach the upstream in any spelling, a Connection
header cannot strip what the gateway adds, forwarding facts come from the gateway or a trusted
proxy only, and claims never inject header lines. The pure functions of gateway.auth.headers
first, then the same rules through real gateways."""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from support.browser import API
from support.fixtures import Launch, Running, signed_in
from support.gateway import SESSION_COOKIE
from support.headers import (
    FORWARDING_NAMES,
    HOP_BY_HOP_NAMES,
    IDENTITY_NAMES,
    as_dict,
    clean,
    decode_principal,
    spellings,
)
from support.raw_http import (
    assert_clean_head,
    exchange,
    get,
)
from support.served import Served, session_cookie
from support.upstream import RecordingUpstream, upstream_headers

from gateway.auth.headers import identity_headers, is_identity_header

FORGED_PRINCIPAL: Final = base64.b64encode(
    json.dumps(
        {"auth_typ": "aad", "claims": [{"typ": "roles", "val": "admin"}], "name_typ": "name"}
    ).encode()
).decode()


_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


# ---- inbound: identity headers (HD-01, HD-03) ----


@pytest.mark.threat("HD-01")
@pytest.mark.parametrize("name", sorted({s for n in IDENTITY_NAMES for s in spellings(n)}), ids=str)
def test_identity_header_is_removed_in_every_spelling(name: str) -> None:
    kept = clean([(name, "admin"), ("Accept", "text/html")])
    assert list(kept.items()) == [("Accept", "text/html")]
    assert is_identity_header(name)


@pytest.mark.threat("HD-01")
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
def test_forged_identity_values_never_reach_the_upstream(name: str, value: str) -> None:
    kept = clean([(name, value), (name, value), ("X-Request-Thing", "ok")])
    assert list(kept.items()) == [("X-Request-Thing", "ok")]
    assert value not in kept.values()


@pytest.mark.threat("HD-03")
@pytest.mark.parametrize(
    "name",
    ["X.Forwarded.User", "X.Authenticated.User", "x.authenticated.user", "X_Authenticated_User"],
)
def test_dot_aliases_are_removed(name: str) -> None:
    assert clean([(name, "admin")]) == CIMultiDict()


@pytest.mark.threat("HD-01")
def test_all_identity_headers_together_leave_only_ordinary_ones() -> None:
    forged = [(name, "forged") for name in IDENTITY_NAMES]
    kept = clean([*forged, ("Accept-Language", "en"), ("X-App-Trace", "t1")])
    assert list(kept.items()) == [("Accept-Language", "en"), ("X-App-Trace", "t1")]


@pytest.mark.threat("HD-01")
@pytest.mark.parametrize(
    "name",
    ["X-Forwarded-Userx", "X-User-Agent-Hint", "X-MS-Request-Id", "Authorization2"],
)
def test_names_that_only_resemble_identity_headers_are_kept(name: str) -> None:
    assert list(clean([(name, "v")]).items()) == [(name, "v")]
    assert not is_identity_header(name)


_SEPARATOR_OR_CASE: Final = {"-": st.sampled_from(["-", "_", "."])}


def _respelled(name: str) -> st.SearchStrategy[str]:
    parts = [
        _SEPARATOR_OR_CASE.get(c, st.sampled_from(sorted({c.lower(), c.upper()}))) for c in name
    ]
    return st.tuples(*parts).map("".join)


@pytest.mark.threat("HD-01", "HD-03", "HD-07", "HD-09")
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


@pytest.mark.threat("HD-05")
@pytest.mark.parametrize(
    "connection",
    [
        "close, X-Forwarded-User",
        "X-MS-CLIENT-PRINCIPAL, X-Forwarded-For",
        "Authorization",
        "x_forwarded_email,  X.MS.CLIENT.PRINCIPAL.NAME ,",
    ],
)
def test_connection_header_cannot_keep_client_identity_or_remove_the_gateways(
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


@pytest.mark.threat("HD-05")
def test_ordinary_headers_named_by_connection_are_dropped() -> None:
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


@pytest.mark.threat("HD-07", "HD-09")
@pytest.mark.parametrize(
    "name", sorted({s for n in FORWARDING_NAMES for s in spellings(n)}), ids=str
)
def test_client_forwarding_headers_are_dropped(name: str) -> None:
    kept = clean([(name, "https"), (name, "127.0.0.1, 10.0.0.1"), ("Accept", "*/*")])
    assert list(kept.items()) == [("Accept", "*/*")]


@pytest.mark.threat("HD-07", "HD-09")
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
def test_spoofed_forwarding_facts_are_not_passed_on(name: str, value: str) -> None:
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


@pytest.mark.threat("HD-07", "HD-09")
@pytest.mark.parametrize(("name", "value"), TRUSTED_ELSEWHERE)
def test_client_ip_scheme_and_prefix_headers_other_stacks_trust_are_dropped(
    name: str, value: str
) -> None:
    kept = clean([(name, value), ("Accept", "*/*")])
    assert list(kept.items()) == [("Accept", "*/*")]


@pytest.mark.threat("HD-05")
@pytest.mark.parametrize("name", [*HOP_BY_HOP_NAMES, "HOST", "host", "Host"])
def test_hop_by_hop_headers_and_host_are_removed(name: str) -> None:
    kept = clean([(name, "x"), ("Content-Type", "application/json")])
    assert list(kept.items()) == [("Content-Type", "application/json")]


INJECTIONS: Final = [
    "ada\r\nX-Admin: 1",
    "ada\nX-Admin: 1",
    "ada\rX-Admin: 1",
    "ada\x00admin",
    "\r\n\r\n<html>",
]


@pytest.mark.threat("HD-13")
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
def test_claim_with_control_characters_is_not_emitted_as_a_plain_header(
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


@pytest.mark.threat("HD-13")
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
def test_non_ascii_and_markup_round_trip_in_the_base64_principal(text: str) -> None:
    headers = as_dict(
        identity_headers({"oid": "o", "name": text}, email_trusted=False, access_token=None)
    )
    encoded = headers["X-MS-CLIENT-PRINCIPAL"]
    assert encoded.isascii()
    assert {"typ": "name", "val": text} in decode_principal(encoded)["claims"]


@pytest.mark.threat("HD-13")
def test_plain_header_values_never_contain_line_breaks_on_the_wire() -> None:
    claims: dict[str, Any] = {
        "oid": "o",
        "preferred_username": "\u560a\u560d",  # UTF-16 units whose low bytes are LF and CR
        "groups": ["a\u2028b", "c\u0085d"],
        "email": "x@\u0130.example",
    }
    for name, value in identity_headers(claims, email_trusted=True, access_token="t"):
        wire = value.encode("utf-8")
        assert b"\r" not in wire and b"\n" not in wire and b"\x00" not in wire, name


# ---- through a real gateway process, over raw sockets ----


@pytest.mark.threat("HD-13")
def test_claims_with_crlf_never_become_headers(
    served: Served, recorder: RecordingUpstream, module_idp: Any
) -> None:
    """Identity headers are built from the identity provider's claims: a display name or user
    name carrying CR LF must not add a header, upstream or in a forward-auth answer."""
    injected = "bob\r\nX-Injected: 1"
    module_idp.set_token_faults(
        id_token_claims={"preferred_username": injected, "name": "<b>\r\nX-Injected: 2"}
    )
    try:
        cookie = session_cookie(served.process.url, module_idp, "bob")
    finally:
        module_idp.set_token_faults()
    line = f"Cookie: {SESSION_COOKIE}={cookie}\r\n".encode()
    mark = recorder.mark()
    [reply] = exchange(
        served.port,
        get(b"/hd13", b"Accept: application/json", cookie=True).replace(b"{cookie}", line),
    ).replies
    assert reply.status == 200
    [seen] = recorder.since(mark)
    for name, value in seen.headers:
        assert name.lower() != "x-injected"
        assert not re.search(r"[\x00-\x1f\x7f]", value), (name, value)
    assert not seen.header("X-MS-CLIENT-PRINCIPAL-NAME")  # left out rather than cleaned
    [principal] = seen.header("X-MS-CLIENT-PRINCIPAL")
    claims = json.loads(base64.b64decode(principal))["claims"]
    assert {"typ": "preferred_username", "val": injected} in claims  # still there, encoded
    [verify] = exchange(
        served.port, get(b"/.auth/verify", cookie=True).replace(b"{cookie}", line)
    ).replies
    assert verify.status == 200
    assert_clean_head(verify)


@pytest.mark.threat("HD-05")
def test_connection_cannot_strip_what_the_gateway_adds(
    served: Served, recorder: RecordingUpstream
) -> None:
    mark = recorder.mark()
    raw = get(
        b"/hd05",
        b"Connection: keep-alive, X-Forwarded-User, X-MS-CLIENT-PRINCIPAL, X-Request-Id, "
        b"X-Forwarded-For, Host",
        b"X-Forwarded-User: admin",
        b"X-MS-CLIENT-PRINCIPAL-NAME: admin@evil.example",
        cookie=True,
    )
    [reply] = exchange(served.port, raw.replace(b"{cookie}", served.cookie_line)).replies
    assert reply.status == 200
    [seen] = recorder.since(mark)
    assert seen.header("X-MS-CLIENT-PRINCIPAL-NAME") == ["alice@contoso.example"]
    assert len(seen.header("X-Forwarded-User")) == 1
    assert seen.header("X-Forwarded-User") != ["admin"]
    assert len(seen.header("X-MS-CLIENT-PRINCIPAL")) == 1
    assert seen.header("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.header("Host") == ["app.test"]
    assert seen.header("X-Request-Id") == reply.header("X-Request-Id")


# ---- through in-process gateways ----


SPOOFED = [
    ("X-Forwarded-User", "admin"),
    ("X-Forwarded-Email", "admin@yourco.com"),
    ("X-Forwarded-Groups", "admins"),
    ("X-Forwarded-Preferred-Username", "admin"),
    (
        "X-MS-CLIENT-PRINCIPAL",
        base64.b64encode(b'{"claims":[{"typ":"roles","val":"admin"}]}').decode(),
    ),
    ("X-MS-CLIENT-PRINCIPAL-NAME", "admin"),
    ("X-MS-CLIENT-PRINCIPAL-ID", "00000000-0000-0000-0000-000000000000"),
    ("X-MS-CLIENT-PRINCIPAL-IDP", "evil"),
    ("X-MS-TOKEN-AAD-ACCESS-TOKEN", "forged"),
    ("Authorization", "Bearer forged"),
    ("x_forwarded_user", "admin"),
    ("X.Forwarded.User", "admin"),
    ("x-ms-client-principal_name", "admin"),
    ("X-Forwarded-Proto", "http"),
    ("X-Forwarded-For", "127.0.0.1, 10.0.0.1"),
    ("Forwarded", "for=127.0.0.1;proto=https"),
    ("X-Real-IP", "127.0.0.1"),
    ("Connection", "close, X-Forwarded-User, X-MS-CLIENT-PRINCIPAL"),
]


FORGED_VALUES = {"admin", "admin@yourco.com", "admins", "forged", "Bearer forged", "evil"}


def assert_no_spoofed_values(seen: dict[str, list[str]]) -> None:
    for values in seen.values():
        for value in values:
            assert value not in FORGED_VALUES, seen


async def send_spoofed(running: Running, path: str) -> dict[str, list[str]]:
    headers = CIMultiDict(SPOOFED)
    headers["Accept"] = "application/json"
    response = await running.browser.session.get(
        running.url + path, headers=headers, allow_redirects=False
    )
    assert response.status == 200, await response.text()
    return upstream_headers(await response.json())


@pytest.mark.threat("HD-01", "HD-07", "HD-09")
async def test_spoofed_identity_headers_are_replaced_when_signed_in(gateway: Running) -> None:
    await signed_in(gateway)
    seen = await send_spoofed(gateway, "/admin")
    assert_no_spoofed_values(seen)
    assert seen["x-ms-client-principal-name"] == ["alice@contoso.example"]
    assert seen["x-forwarded-user"] != ["admin"]
    assert "authorization" not in seen
    assert "x-ms-token-aad-access-token" not in seen
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["https"]
    assert "forwarded" not in seen and "x-real-ip" not in seen
    principal = json.loads(base64.b64decode(seen["x-ms-client-principal"][0]))
    assert {"typ": "roles", "val": "admin"} not in principal["claims"]


@pytest.mark.threat("HD-01")
async def test_spoofed_identity_headers_are_removed_on_public_paths(launch: Launch) -> None:
    running = await launch(proxy={"public_paths": "/public/"})
    seen = await send_spoofed(running, "/public/page")
    assert_no_spoofed_values(seen)
    for name in ("x-forwarded-user", "x-ms-client-principal", "authorization", "x-forwarded-email"):
        assert name not in seen


@pytest.mark.threat("HD-11")
async def test_health_user_agents_get_no_free_pass(gateway: Running) -> None:
    """HD-11: authentication never depends on the User-Agent."""
    for agent in ("kube-probe/1.29", "GoogleHC/1.0", ""):
        response = await gateway.browser.get(
            "/admin", headers={"User-Agent": agent, "Accept": "application/json"}
        )
        assert response.status == 401, agent


@pytest.mark.threat("HD-09")
async def test_client_address_is_the_rightmost_untrusted_hop(launch: Launch, idp: Any) -> None:
    trusting = await launch(proxy={"trusted_proxies": "127.0.0.1/32 10.0.0.0/8"})
    await signed_in(trusting)
    response = await trusting.browser.get(
        "/x", headers={**API, "X-Forwarded-For": "6.6.6.6, 203.0.113.9, 10.1.2.3"}
    )
    assert upstream_headers(await response.json())["x-forwarded-for"] == ["203.0.113.9"]
    plain = await launch()
    await signed_in(plain)
    response = await plain.browser.get("/x", headers={**API, "X-Forwarded-For": "6.6.6.6"})
    assert upstream_headers(await response.json())["x-forwarded-for"] == ["127.0.0.1"]
