"""THREATS.md A6 (cookies), A10 (information leakage) and F-19 (stored records in a format this
version does not know), end to end against in-process gateways on an https public URL.

Cookies are read from the Set-Cookie headers the gateway actually sends; tampered and duplicated
cookies are sent by hand; stored records are overwritten in a real Redis.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Final

import aiohttp
import pytest
from multidict import CIMultiDict
from support.browser import API, NAVIGATE, Browser
from support.fixtures import Launch, Running, signed_in
from support.gateway import PUBLIC_URL, SESSION_COOKIE, SIGNIN_COOKIE, idp_ssl
from support.redis_server import RedisServer
from support.upstream import upstream_headers

from gateway.keys import STORAGE
from gateway.sessions.sealing import Sealer

ID_SHAPE: Final = re.compile(r"^[A-Za-z0-9_-]{43}$")
JWT_MARK: Final = "eyJ"  # base64url of '{"': the start of every JWT header and payload
ALICE: Final = "alice@contoso.example"
BOB: Final = "bob@contoso.example"


# ---- Set-Cookie as the browser reads it ----


@dataclass
class SetCookie:
    name: str
    value: str
    attributes: dict[str, str]  # lower-case attribute names; "" for flags
    raw: str


def parse_set_cookie(header: str) -> SetCookie:
    pair, *attributes = header.split(";")
    name, _, value = pair.strip().partition("=")
    parsed: dict[str, str] = {}
    for attribute in attributes:
        key, _, attr_value = attribute.strip().partition("=")
        parsed[key.lower()] = attr_value
    return SetCookie(name, value, parsed, header)


def set_cookies(response: aiohttp.ClientResponse) -> dict[str, SetCookie]:
    found = [parse_set_cookie(h) for h in response.headers.getall("Set-Cookie", [])]
    by_name = {c.name: c for c in found}
    assert len(by_name) == len(found), "one response sets one cookie twice"
    return by_name


def assert_hardened(cookie: SetCookie, *, lifetime: int, same_site: set[str]) -> None:
    """CK-01: the __Host- prefix, Secure, HttpOnly, Path=/, no Domain, a bounded lifetime."""
    assert cookie.name.startswith("__Host-")
    assert "secure" in cookie.attributes and "httponly" in cookie.attributes
    assert cookie.attributes.get("path") == "/"
    assert "domain" not in cookie.attributes
    assert cookie.attributes.get("samesite", "").lower() in same_site
    max_age = int(cookie.attributes["max-age"])
    assert 0 < max_age <= lifetime
    if "expires" in cookie.attributes:
        expires = parsedate_to_datetime(cookie.attributes["expires"]).timestamp()
        assert expires <= time.time() + lifetime + 5
    assert len(cookie.raw.encode()) < 4096


@dataclass(frozen=True)
class CookieConfig:
    id: str
    overrides: dict[str, Any]
    session_name: str
    session_lifetime: int
    signin_same_site: set[str]


# MSAL warns about response_mode=query (it prefers form_post); that is the point of this case.
QUERY_MODE_WARNING: Final = "ignore:response_mode='form_post' is recommended:UserWarning"
COOKIE_CONFIGS: Final = [
    pytest.param(CookieConfig("defaults", {}, SESSION_COOKIE, 86400, {"none"}), id="defaults"),
    pytest.param(
        CookieConfig(
            "short-lifetime",
            {"session": {"absolute_ttl_seconds": 3600, "idle_ttl_seconds": 1800}},
            SESSION_COOKIE,
            3600,
            {"none"},
        ),
        id="short-lifetime",
    ),
    pytest.param(
        CookieConfig(
            "own-name-query-mode",
            {"session": {"cookie_name": "app-sess"}, "signin": {"response_mode": "query"}},
            "__Host-app-sess",
            86400,
            {"lax", "strict"},
        ),
        id="own-name-query-mode",
        marks=pytest.mark.filterwarnings(QUERY_MODE_WARNING),
    ),
]


@pytest.mark.parametrize("config", COOKIE_CONFIGS)
async def test_ck01_cookie_flags_on_every_set_cookie(launch: Launch, config: CookieConfig) -> None:
    running = await launch(**config.overrides)
    browser = running.browser
    protected = await browser.get("/ck01")
    start = await browser.get(protected.headers["Location"])
    assert start.status == 302
    signin_name = config.session_name + "-signin"
    [signin] = set_cookies(start).values()
    assert signin.name == signin_name
    assert_hardened(
        signin, lifetime=running.settings.signin.flow_ttl_seconds, same_site=config.signin_same_site
    )
    assert ID_SHAPE.match(signin.value)

    done = await browser.deliver(await browser.authorize(start.headers["Location"]))
    assert done.status == 302
    [session] = set_cookies(done).values()  # the sign-in cookie is left to expire, not rewritten
    assert session.name == config.session_name
    assert_hardened(session, lifetime=config.session_lifetime, same_site={"lax", "strict"})
    assert ID_SHAPE.match(session.value)  # only an opaque id: no claims, no token
    assert session.value != signin.value

    page = await browser.get("/ck01", headers=API)
    assert page.status == 200
    assert "Set-Cookie" not in page.headers  # a normal request neither renews nor re-sets it

    logout = await browser.get("/.auth/logout")
    cleared = set_cookies(logout)[config.session_name]
    # Deleting only works with the same scope the cookie was set with.
    assert cleared.value in ("", '""') and cleared.attributes["max-age"] == "0"
    assert cleared.attributes.get("path") == "/" and "domain" not in cleared.attributes
    assert "secure" in cleared.attributes and "httponly" in cleared.attributes


@pytest.mark.parametrize("user", ["alice", "carol"])
async def test_ck03_cookie_is_an_opaque_id_even_for_250_groups(
    launch: Launch, idp: Any, user: str
) -> None:
    running = await launch(groups={"graph_url": idp.graph_url})
    response = await running.browser.sign_in("/", user)
    assert response.status == 302, await response.text()
    [session] = set_cookies(response).values()
    assert ID_SHAPE.match(session.value)
    assert JWT_MARK not in session.raw
    assert len(session.raw.encode()) < 4096
    cookies = {c.key: c.value for c in running.browser.jar}
    assert set(cookies) <= {SESSION_COOKIE, SIGNIN_COOKIE}  # no cookie split into numbered parts
    cookie_header = "; ".join(f"{k}={v}" for k, v in cookies.items())
    assert len(cookie_header) < 4096

    page = await running.browser.get("/who", headers=API)
    assert page.status == 200  # never 431/400 for a user with many groups
    body = await page.json()
    assert body["path"] == "/who"
    seen = upstream_headers(body)
    assert seen["x-ms-client-principal-name"] == [f"{user}@contoso.example"]
    for name, value in body["headers"]:
        assert len(name) + 2 + len(value) < 8192, name


# ---- CK-05: tampered ids are no session, and never a 500 ----


def flip(value: str, at: int) -> str:
    replacement = "A" if value[at] != "A" else "B"
    return value[:at] + replacement + value[at + 1 :]


TAMPERINGS: Final[dict[str, Callable[[str], str]]] = {
    "flip-first": lambda v: flip(v, 0),
    "flip-middle": lambda v: flip(v, 21),
    "flip-last": lambda v: flip(v, 42),
    "truncate-one": lambda v: v[:-1],
    "truncate-to-32": lambda v: v[:32],
    "truncate-to-31": lambda v: v[:31],
    "empty": lambda v: "",
    "pad-one": lambda v: v + "=",
    "pad-two": lambda v: v + "==",
    "extend-one": lambda v: v + "A",
    "extend-to-65": lambda v: (v * 2)[:65],
    "doubled": lambda v: v + v,
    "standard-base64-alphabet": lambda v: "+" + v[1:-1] + "/",
    "percent-encoded": lambda v: "%" + format(ord(v[0]), "02X") + v[1:],
    "upper-case": lambda v: v.upper() if v.upper() != v else v[:-1] + "a",
    "lower-case": lambda v: v.lower() if v.lower() != v else v[:-1] + "B",
    "dot-appended-signature": lambda v: v + ".c2lnbmF0dXJl",
}


@pytest.mark.parametrize("tamper", list(TAMPERINGS), ids=list(TAMPERINGS))
async def test_ck05_tampered_session_id_reads_as_no_session(
    gateway: Running, monkeypatch: pytest.MonkeyPatch, tamper: str
) -> None:
    await signed_in(gateway)
    real = gateway.browser.cookie(SESSION_COOKIE)
    assert real is not None
    value = TAMPERINGS[tamper](real)
    assert value != real
    storage = gateway.app[STORAGE]
    looked_up: list[str] = []
    original_get = storage.get

    async def recording_get(key: str, **kwargs: Any) -> bytes | None:
        looked_up.append(key)
        return await original_get(key, **kwargs)

    monkeypatch.setattr(storage, "get", recording_get)
    async with aiohttp.ClientSession() as client:
        for path, headers, expected in (
            ("/ck05", API, 401),
            ("/ck05", NAVIGATE, 302),
            ("/.auth/me", API, 401),
            ("/.auth/verify", API, 401),
        ):
            async with client.get(
                gateway.url + path,
                headers={**headers, "Cookie": f"{SESSION_COOKIE}={value}"},
                allow_redirects=False,
            ) as response:
                body = await response.read()
                assert response.status == expected, (path, response.status, body[:200])
                if expected == 302:
                    assert response.headers["Location"].startswith("/.auth/login/aad")
                else:
                    assert json.loads(body)["error"] in ("sign_in_required", "session_expired")
    # The store is asked only about values shaped like an id, and only under a keyed digest.
    for key in looked_up:
        assert re.fullmatch(r"gw:session:[0-9a-f]{64}", key), key
    if not re.fullmatch(r"[A-Za-z0-9_-]{32,64}", value):  # not even shaped like an id
        assert looked_up == []
    # Tampering with a copy does not end the real session.
    monkeypatch.undo()
    page = await gateway.browser.get("/ck05", headers=API)
    assert page.status == 200
    assert upstream_headers(await page.json())["x-ms-client-principal-name"] == [ALICE]


@pytest.mark.parametrize("tamper", ["flip-middle", "truncate-one", "empty", "doubled"])
async def test_ck05_tampered_sign_in_cookie_signs_no_one_in(
    gateway: Running, idp: Any, tamper: str
) -> None:
    browser = gateway.browser
    auth = await browser.authorize(await browser.start_sign_in("/"))
    real = browser.cookie(SIGNIN_COOKIE)
    assert real is not None
    browser.jar.update_cookies(
        {SIGNIN_COOKIE: TAMPERINGS[tamper](real)}, response_url=browser.jar_origin()
    )
    response = await browser.deliver(auth)
    assert response.status == 400
    assert browser.cookie(SESSION_COOKIE) is None
    assert idp.token_requests() == []  # refused before the code was redeemed


# ---- CK-07: the same cookie name twice ----


async def two_sessions(running: Running, idp: Any) -> tuple[str, str]:
    """Alice's session id (the victim's) and Bob's (the attacker's own, valid session)."""
    await signed_in(running, user="alice")
    victim = running.browser.cookie(SESSION_COOKIE)
    other = Browser(running.url, PUBLIC_URL, idp_ssl(idp.ca_path))
    try:
        assert (await other.sign_in("/", "bob")).status == 302
        attacker = other.cookie(SESSION_COOKIE)
    finally:
        await other.close()
    assert victim is not None and attacker is not None
    return victim, attacker


DUPLICATES: Final[dict[str, Callable[[str, str], list[str]]]] = {
    "attacker-first": lambda real, evil: [f"{SESSION_COOKIE}={evil}; {SESSION_COOKIE}={real}"],
    "attacker-last": lambda real, evil: [f"{SESSION_COOKIE}={real}; {SESSION_COOKIE}={evil}"],
    "attacker-last-after-another-cookie": lambda real, evil: [
        f"{SESSION_COOKIE}={real}; theme=dark; {SESSION_COOKIE}={evil}"
    ],
    "comma-separated": lambda real, evil: [f"{SESSION_COOKIE}={real}, {SESSION_COOKIE}={evil}"],
    "two-cookie-headers-attacker-first": lambda real, evil: [
        f"{SESSION_COOKIE}={evil}",
        f"{SESSION_COOKIE}={real}",
    ],
    "two-cookie-headers-attacker-last": lambda real, evil: [
        f"{SESSION_COOKIE}={real}",
        f"{SESSION_COOKIE}={evil}",
    ],
}


@pytest.mark.parametrize("attacker_value", ["own-session", "garbage"])
@pytest.mark.parametrize("layout", list(DUPLICATES), ids=list(DUPLICATES))
async def test_ck07_duplicate_cookie_names_never_let_the_attacker_win(
    gateway: Running, idp: Any, layout: str, attacker_value: str
) -> None:
    """Whatever the gateway does with two values for its cookie, it does the same every time and
    the attacker's value never decides who the user is: the victim's session or no session."""
    real, attacker = await two_sessions(gateway, idp)
    evil = attacker if attacker_value == "own-session" else "attacker"
    headers: CIMultiDict[str] = CIMultiDict(API)
    for value in DUPLICATES[layout](real, evil):
        headers.add("Cookie", value)
    outcomes = set()
    async with aiohttp.ClientSession() as client:
        for _ in range(3):
            async with client.get(gateway.url + "/ck07", headers=headers) as response:
                body = await response.json()
                assert response.status in (200, 400, 401), response.status
                if response.status == 200:
                    seen = upstream_headers(body)
                    assert "__Host-msal-gateway" not in ";".join(seen.get("cookie", []))
                    who = seen["x-ms-client-principal-name"][0]
                else:
                    who = None
                outcomes.add((response.status, who))
            async with client.get(gateway.url + "/.auth/me", headers=headers) as me:
                user = (await me.json())[0]["user_id"] if me.status == 200 else None
                outcomes.add((me.status, user))
    assert BOB not in {who for _, who in outcomes}, outcomes
    assert {who for _, who in outcomes} <= {ALICE, None}
    assert len({status for status, _ in outcomes if status != 200}) <= 1
    assert len({who for _, who in outcomes}) == 1, f"not deterministic: {outcomes}"


# ---- A10 / LK-01: /.auth/me ----


async def test_lk01_me_has_no_tokens_and_is_json_with_nosniff(launch: Launch) -> None:
    running = await launch(scopes="api://upstream/read")
    await signed_in(running)
    bearer = upstream_headers(await (await running.browser.get("/x", headers=API)).json())
    [authorization] = bearer["authorization"]
    access_token = authorization.removeprefix("Bearer ")
    response = await running.browser.get("/.auth/me", headers=API)
    assert response.status == 200
    text = await response.text()
    assert access_token not in text
    assert JWT_MARK not in text  # no id, access or refresh token in any field
    [entry] = json.loads(text)
    assert not {"access_token", "id_token", "refresh_token"} & set(entry)
    assert response.headers["Content-Type"].split(";")[0] == "application/json"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"


async def test_lk01_tokens_in_me_when_enabled_but_never_the_refresh_token(launch: Launch) -> None:
    running = await launch(scopes="api://upstream/read", tokens={"expose_in_me": True})
    await signed_in(running)
    [entry] = await (await running.browser.get("/.auth/me", headers=API)).json()
    assert entry["access_token"].startswith(JWT_MARK) and entry["id_token"].startswith(JWT_MARK)
    assert not [key for key in entry if "refresh" in key.lower()]
    assert not [
        v
        for k, v in entry.items()
        if k not in ("access_token", "id_token") and JWT_MARK in json.dumps(v)
    ]


HOSTILE_ORIGINS: Final = ["https://evil.example", "null", "https://app.test.evil.example"]


@pytest.mark.parametrize("origin", HOSTILE_ORIGINS)
@pytest.mark.parametrize(
    ("method", "path", "extra"),
    [
        ("GET", "/.auth/me", {}),
        ("GET", "/.auth/verify", {}),
        ("POST", "/.auth/refresh", {}),
        ("OPTIONS", "/.auth/me", {"Access-Control-Request-Method": "GET"}),
        ("OPTIONS", "/.auth/refresh", {"Access-Control-Request-Method": "POST"}),
    ],
    ids=["me", "verify", "refresh", "preflight-me", "preflight-refresh"],
)
async def test_lk01_no_cors_for_a_hostile_origin(
    gateway: Running, origin: str, method: str, path: str, extra: dict[str, str]
) -> None:
    await signed_in(gateway)
    response = await gateway.browser.session.request(
        method,
        gateway.url + path,
        headers={**API, "Origin": origin, "Sec-Fetch-Site": "cross-site", **extra},
        allow_redirects=False,
    )
    body = await response.read()
    assert response.status < 500
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]
    if path == "/.auth/me" and response.status == 200:
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    if path == "/.auth/refresh":
        assert response.status == 403 or method == "OPTIONS"  # not started from another site
    assert JWT_MARK.encode() not in body


# ---- A10 / LK-03: identity-provider errors show a request id, no description or token ----


FAKE_JWT: Final = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJsZWFrZWQifQ.c2lnbmF0dXJlLXNlY3JldA"


@dataclass(frozen=True)
class ProviderError:
    id: str
    status: int
    body: str | dict[str, Any]
    leaks: tuple[str, ...]  # text that must not appear in what the browser gets
    content_type: str | None = None


PROVIDER_ERRORS: Final = [
    ProviderError(
        "invalid-grant-aadsts",
        400,
        {"error": "invalid_grant", "error_description": "AADSTS70008: secret details"},
        ("secret details", "AADSTS70008: secret"),
    ),
    ProviderError(
        "invalid-grant-with-token-in-description",
        400,
        {
            "error": "invalid_grant",
            "error_description": f"AADSTS50173: grant revoked. Token: {FAKE_JWT} Trace ID: 0f1e",
            "error_codes": [50173],
            "trace_id": "0f1e-trace",
            "correlation_id": "c0ffee-correlation",
        },
        (FAKE_JWT, JWT_MARK, "grant revoked", "Trace ID"),
    ),
    ProviderError(
        "invalid-client-secret",
        401,
        {
            "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the "
            "secret being sent is the client secret value, not the client secret ID.",
        },
        ("Invalid client secret provided", "client secret value"),
    ),
    ProviderError(
        "html-server-error",
        500,
        "<html><body><h1>Server Error</h1><pre>at Microsoft.IdentityServer secret details "
        f"{FAKE_JWT}</pre></body></html>",
        ("secret details", "Microsoft.IdentityServer", JWT_MARK, "<pre>"),
        "text/html",
    ),
    ProviderError(
        "markup-in-error-code",
        400,
        {"error": "<img src=x onerror=alert(1)>", "error_description": "secret details"},
        ("<img", "secret details"),
    ),
]


@pytest.mark.parametrize("accept", ["html", "json"])
@pytest.mark.parametrize("case", PROVIDER_ERRORS, ids=[c.id for c in PROVIDER_ERRORS])
async def test_lk03_sign_in_errors_show_a_request_id_only(
    gateway: Running, idp: Any, case: ProviderError, accept: str
) -> None:
    browser = gateway.browser
    auth = await browser.authorize(await browser.start_sign_in("/"))
    idp.fail("token", case.status, case.body, content_type=case.content_type)
    response = await browser.session.post(
        browser.local(auth.url),
        data=auth.fields,
        headers=NAVIGATE if accept == "html" else API,
        allow_redirects=False,
    )
    text = await response.text()
    assert response.status == 502, text[:300]
    assert len(idp.token_requests()) == 1  # the provider really was asked, and refused
    request_id = response.headers["X-Request-Id"]
    assert request_id in text
    if accept == "json":
        assert json.loads(text)["request_id"] == request_id
    else:
        assert response.headers["Content-Type"].startswith("text/html")
    leaked = [leak for leak in case.leaks if leak in text]
    assert leaked == [], f"the error page shows {leaked}: {text[-600:]}"
    assert "Traceback" not in text
    assert browser.cookie(SESSION_COOKIE) is None


REFRESH_ERRORS: Final = [
    ProviderError(
        "invalid-grant",
        400,
        {"error": "invalid_grant", "error_description": "AADSTS70008: secret details"},
        ("secret details", "AADSTS70008: secret"),
    ),
    ProviderError(
        "interaction-required",
        400,
        {
            "error": "interaction_required",
            "error_description": "AADSTS50076: secret details about the policy",
            "suberror": "basic_action",
        },
        ("secret details", "about the policy"),
    ),
    ProviderError(
        "server-error",
        500,
        {"error": "server_error", "error_description": f"AADSTS90012: secret {FAKE_JWT}"},
        ("secret", JWT_MARK),
    ),
]


@pytest.mark.parametrize("case", REFRESH_ERRORS, ids=[c.id for c in REFRESH_ERRORS])
async def test_lk03_refresh_errors_show_a_request_id_only(
    launch: Launch, idp: Any, case: ProviderError
) -> None:
    running = await launch(scopes="api://upstream/read")
    await signed_in(running)
    idp.fail("token", case.status, case.body, times=None)
    try:
        response = await running.browser.session.post(
            running.url + "/.auth/refresh", headers=API, allow_redirects=False
        )
        text = await response.text()
    finally:
        idp.clear_faults()
    assert response.status in (401, 502, 503), text
    assert json.loads(text)["request_id"] == response.headers["X-Request-Id"]
    leaked = [leak for leak in case.leaks if leak in text]
    assert leaked == [], f"the error shows {leaked}: {text}"


# ---- F-19: a stored record this version cannot read is a sign-out, never a 500 ----


def resp(server: RedisServer, *parts: bytes) -> bytes:
    """One Redis command with binary arguments; the raw reply (a bulk reply read in full)."""
    payload = f"*{len(parts)}\r\n".encode() + b"".join(
        b"$%d\r\n%s\r\n" % (len(p), p) for p in parts
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        sock.sendall(payload)
        reply = sock.recv(1 << 20)
        while b"\r\n" not in reply:
            reply += sock.recv(1 << 20)
        if reply.startswith(b"$") and not reply.startswith(b"$-1"):
            first, _, _ = reply.partition(b"\r\n")
            while len(reply) < len(first) + 2 + int(first[1:]) + 2:
                reply += sock.recv(1 << 20)
        return reply


def bulk(reply: bytes) -> bytes:
    first, _, rest = reply.partition(b"\r\n")
    assert first.startswith(b"$"), reply[:80]
    return rest[: int(first[1:])]


def keys(server: RedisServer, pattern: str) -> list[str]:
    reply = server.command("KEYS", pattern).decode()
    lines = reply.split("\r\n")
    return [line for line in lines[1:] if line and not line.startswith("$")]


def replace_value(server: RedisServer, key: str, value: bytes) -> None:
    assert resp(server, b"SET", key.encode(), value, b"KEEPTTL") == b"+OK\r\n"


Garble = Callable[[str, Sealer, dict[str, Any]], bytes]


def sealed_json(change: Callable[[dict[str, Any]], object]) -> Garble:
    """A record sealed correctly (as another version would) whose JSON has another shape."""

    def build(key: str, sealer: Sealer, record: dict[str, Any]) -> bytes:
        return sealer.seal(key, json.dumps(change(dict(record))).encode())

    return build


def _with(**changes: object) -> Callable[[dict[str, Any]], object]:
    return lambda record: {**record, **changes}


def _without(name: str) -> Callable[[dict[str, Any]], object]:
    return lambda record: {k: v for k, v in record.items() if k != name}


GARBAGE: Final[dict[str, Garble]] = {
    "empty": lambda key, sealer, record: b"",
    "text": lambda key, sealer, record: b"not a record",
    "random-bytes": lambda key, sealer, record: os.urandom(96),
    "unknown-envelope-version": lambda key, sealer, record: b"\x02" + os.urandom(80),
    "truncated-envelope": lambda key, sealer, record: b"\x01" + os.urandom(8),
    "wrong-tag": lambda key, sealer, record: b"\x01" + os.urandom(60),
    "unsealed-json-record": lambda key, sealer, record: json.dumps(record).encode(),
    "sealed-under-another-key": lambda key, sealer, record: sealer.seal(
        "gw:session:" + "0" * 64, json.dumps(record).encode()
    ),
    "sealed-not-json": lambda key, sealer, record: sealer.seal(key, b"\xff\xfe\x00binary"),
    "sealed-null": sealed_json(lambda record: None),
    "sealed-list": sealed_json(lambda record: [record]),
    "sealed-string": sealed_json(lambda record: "v2:" + json.dumps(record)),
    "sealed-with-format-field": sealed_json(_with(format=2)),
    "sealed-without-claims": sealed_json(_without("claims")),
    "sealed-times-as-iso-strings": sealed_json(
        _with(created_at="2026-01-01T00:00:00Z", expires_at="2999-01-01T00:00:00Z")
    ),
    "sealed-claims-as-jwt-string": sealed_json(_with(claims=FAKE_JWT)),
    "sealed-tokens-as-list": sealed_json(_with(tokens=[])),
    "sealed-groups-as-one-string": sealed_json(_with(groups="g1,g2")),
}


@pytest.fixture
async def redis_gateway(launch: Launch, redis_url: str) -> tuple[Running, Sealer]:
    secret = secrets.token_urlsafe(32)
    running = await launch(session_store="redis", redis_url=redis_url, cookie_secret=secret)
    return running, Sealer(secret.encode())


async def assert_signed_out(running: Running, client: aiohttp.ClientSession, cookie: str) -> None:
    for path, headers, expected in (
        ("/f19", API, 401),
        ("/f19", NAVIGATE, 302),
        ("/.auth/me", API, 401),
        ("/.auth/verify", API, 401),
    ):
        async with client.get(
            running.url + path,
            headers={**headers, "Cookie": f"{SESSION_COOKIE}={cookie}"},
            allow_redirects=False,
        ) as response:
            body = await response.read()
            assert response.status == expected, (path, response.status, body[:300])
            if expected == 302:
                assert response.headers["Location"].startswith("/.auth/login/aad")


@pytest.mark.parametrize("garble", list(GARBAGE), ids=list(GARBAGE))
async def test_f19_unreadable_session_record_is_a_sign_out(
    redis_gateway: tuple[Running, Sealer], redis_server: RedisServer, garble: str
) -> None:
    running, sealer = redis_gateway
    await signed_in(running)
    cookie = running.browser.cookie(SESSION_COOKIE)
    assert cookie is not None
    [key] = keys(redis_server, "gw:session:*")
    record = json.loads(sealer.open(key, bulk(resp(redis_server, b"GET", key.encode()))))
    replace_value(redis_server, key, GARBAGE[garble](key, sealer, record))
    async with aiohttp.ClientSession() as client:
        await assert_signed_out(running, client, cookie)
        await assert_signed_out(running, client, cookie)  # and stays so: no half-read record
    # Signing in again works: the unreadable record does not wedge the user.
    again = await running.browser.sign_in("/", "alice")
    assert again.status == 302
    page = await running.browser.get("/f19", headers=API)
    assert page.status == 200
    assert upstream_headers(await page.json())["x-ms-client-principal-name"] == [ALICE]


@pytest.mark.parametrize("garble", ["random-bytes", "unknown-envelope-version", "sealed-null"])
async def test_f19_unreadable_token_cache_ends_the_session_on_refresh(
    redis_gateway: tuple[Running, Sealer], redis_server: RedisServer, garble: str
) -> None:
    running, sealer = redis_gateway
    await signed_in(running)
    [key] = keys(redis_server, "gw:tokens:*")
    replace_value(redis_server, key, GARBAGE[garble](key, sealer, {}))
    response = await running.browser.session.post(
        running.url + "/.auth/refresh", headers=API, allow_redirects=False
    )
    assert response.status == 401, await response.text()
    assert (await running.browser.get("/f19", headers=API)).status == 401


@pytest.mark.parametrize(
    "garble", ["random-bytes", "unknown-envelope-version", "sealed-null", "sealed-list"]
)
async def test_f19_unreadable_pending_sign_in_is_refused_then_retried(
    redis_gateway: tuple[Running, Sealer], redis_server: RedisServer, idp: Any, garble: str
) -> None:
    running, sealer = redis_gateway
    browser = running.browser
    auth = await browser.authorize(await browser.start_sign_in("/"))
    [key] = keys(redis_server, "gw:flow:*")
    replace_value(redis_server, key, GARBAGE[garble](key, sealer, {}))
    response = await browser.deliver(auth)
    assert response.status == 400
    assert browser.cookie(SESSION_COOKIE) is None
    assert idp.token_requests() == []
    assert (await browser.sign_in("/", "alice")).status == 302


async def test_garbage_helpers_write_what_they_say(
    redis_gateway: tuple[Running, Sealer], redis_server: RedisServer
) -> None:
    """The F-19 cases really replace the stored bytes (a no-op write would pass them all)."""
    running, _ = redis_gateway
    await signed_in(running)
    [key] = keys(redis_server, "gw:session:*")
    replace_value(redis_server, key, b"not a record")
    assert bulk(resp(redis_server, b"GET", key.encode())) == b"not a record"
    ttl = int(redis_server.command("PTTL", key).decode().strip(":\r\n"))
    assert ttl > 0  # KEEPTTL: the record would still be there when the gateway reads it
