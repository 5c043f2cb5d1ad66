"""Forward-auth (THREATS.md A8: FA-01, FA-03, FA-05) end to end: a real nginx running the
documented configuration (deploy/nginx/forward-auth.conf) asks the gateway's /.auth/verify about
every request and proxies to two echo applications that record every path they serve, one at /
and one at /app2/. The gateway runs with GATEWAY_MODE=forward-auth and no upstream: only nginx
talks to the applications.

Most tests run twice: with the gateway trusting nginx's address (GATEWAY_PROXY__TRUSTED_PROXIES,
so it believes X-Original-URI/-Method and X-Forwarded-For from nginx) and without, because the
snippet must be safe either way.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import jwt
import pytest
from multidict import CIMultiDict
from support.browser import API, NAVIGATE, Browser
from support.fixtures import Launch, Running
from support.gateway import PUBLIC_URL, SESSION_COOKIE, idp_ssl, shared_redis
from support.idp import ALICE_OID
from support.nginx import Nginx
from support.ports import free_port
from support.redis_server import RedisServer
from support.upstream import RecordingUpstream, upstream_headers
from yarl import URL

from gateway.auth.headers import FORWARDING_HEADERS
from gateway.auth.headers import IDENTITY_HEADERS as GATEWAY_IDENTITY_HEADERS
from gateway.keys import SESSIONS, UPSTREAM_POOL

# What /.auth/verify may answer and nginx copies onto the request (the snippet's list).
IDENTITY_HEADERS = (
    "X-MS-CLIENT-PRINCIPAL",
    "X-MS-CLIENT-PRINCIPAL-NAME",
    "X-MS-CLIENT-PRINCIPAL-ID",
    "X-MS-CLIENT-PRINCIPAL-IDP",
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Groups",
    "X-Forwarded-Preferred-Username",
    "Authorization",
)
SPOOFED = "spoofed-admin"
SPOOFED_ADDRESS = "10.66.66.66"
SIGN_IN = "/.auth/login/aad?post_login_redirect_uri="


def spoofed_headers(base: dict[str, str]) -> CIMultiDict[str]:
    """`base` plus every identity header a client could try, in several spellings, and forged
    forwarding facts."""
    headers: CIMultiDict[str] = CIMultiDict(base)
    for name in IDENTITY_HEADERS:
        headers.add(name, f"Bearer {SPOOFED}" if name == "Authorization" else SPOOFED)
    for name in (
        "x-forwarded-user",  # a second copy, lower case
        "X_Forwarded_User",  # folded onto X-Forwarded-User by CGI/WSGI/PHP
        "X-Auth-Request-User",
        "X-Auth-Request-Email",
        "X-MS-TOKEN-AAD-ACCESS-TOKEN",
        "Remote-User",
        "X-Remote-User",
    ):
        headers.add(name, SPOOFED)
    headers.add("X-Forwarded-For", SPOOFED_ADDRESS)
    headers.add("X-Real-IP", SPOOFED_ADDRESS)
    headers.add("Forwarded", f"for={SPOOFED_ADDRESS}")
    return headers


@pytest.fixture
def app_server() -> Iterator[RecordingUpstream]:
    """The echo application, remembering every request (to prove what never got through)."""
    server = RecordingUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def app2_server() -> Iterator[RecordingUpstream]:
    """A second application, behind the same nginx at /app2/."""
    server = RecordingUpstream().start()
    yield server
    server.stop()


# The gateway answers only /.auth/ and relays nothing (GATEWAY_MODE).
FORWARD_AUTH_MODE: dict[str, Any] = {"mode": "forward-auth", "upstream": None}


StartNginx = Callable[..., Nginx]


@pytest.fixture
def start_nginx() -> Iterator[StartNginx]:
    """Start nginx servers; at teardown stop them and print their logs (pytest shows them only
    when the test failed)."""
    started: list[Nginx] = []

    def start(**kwargs: Any) -> Nginx:
        server = Nginx(**kwargs)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        print(server.logs())
        server.cleanup()


TRUST = {
    "nginx-trusted": {"proxy": {"trusted_proxies": "127.0.0.1/32"}},
    "no-trusted-proxies": {},
}


@pytest.fixture(params=sorted(TRUST))
def trust(request: pytest.FixtureRequest) -> dict[str, Any]:
    overrides: dict[str, Any] = TRUST[request.param]
    return overrides


def address(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


@dataclass
class ForwardAuth:
    gateway: Running
    nginx: Nginx
    browser: Browser  # a browser whose https://app.test is nginx
    app: RecordingUpstream  # at /
    app2: RecordingUpstream  # at /app2/


MakeForwardAuth = Callable[..., Awaitable[ForwardAuth]]


@pytest.fixture
async def make_forward_auth(
    launch: Launch,
    idp: Any,
    app_server: RecordingUpstream,
    app2_server: RecordingUpstream,
    start_nginx: StartNginx,
) -> AsyncIterator[MakeForwardAuth]:
    """Start a gateway in forward-auth mode (keyword overrides as for `launch`) with nginx in
    front of it and of both applications, and a browser pointed at nginx."""
    browsers: list[Browser] = []

    async def make(**overrides: Any) -> ForwardAuth:
        gateway = await launch(**FORWARD_AUTH_MODE, **overrides)
        nginx = start_nginx(
            gateway=address(gateway.url), app=app_server.address, app2=app2_server.address
        )
        browser = Browser(nginx.url, PUBLIC_URL, idp_ssl(idp.ca_path))
        browsers.append(browser)
        return ForwardAuth(gateway, nginx, browser, app_server, app2_server)

    yield make
    for browser in browsers:
        await browser.close()


@pytest.fixture
async def forward_auth(make_forward_auth: MakeForwardAuth, trust: dict[str, Any]) -> ForwardAuth:
    fa = await make_forward_auth(**trust)
    return fa


async def sign_in(fa: ForwardAuth, path: str = "/", user: str = "alice") -> None:
    response = await fa.browser.sign_in(path, user)
    assert response.status == 302, await response.text()
    assert response.headers["Location"] == path


async def verify_answer(fa: ForwardAuth) -> dict[str, str]:
    """The identity headers the gateway vouches for, asked directly (through nginx's /.auth/)."""
    # The browser's cookies, but a client that accepts headers as large as the gateway may send.
    async with (
        aiohttp.ClientSession(cookie_jar=fa.browser.jar, max_field_size=65536) as client,
        client.get(fa.nginx.url + "/.auth/verify", headers=API) as response,
    ):
        assert response.status == 200
        return {n: response.headers[n] for n in IDENTITY_HEADERS if n in response.headers}


async def seen_by_app(fa: ForwardAuth, path: str, headers: Any = None) -> dict[str, list[str]]:
    response = await fa.browser.get(path, headers=headers or API)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return upstream_headers(body)


# --- anonymous requests -----------------------------------------------------------------------


@pytest.mark.threat("FA-05")
async def test_anonymous_navigation_is_sent_to_sign_in_by_path_only(
    forward_auth: ForwardAuth,
) -> None:
    """FA-05: the sign-in redirect is built from $request_uri alone; a spoofed Host (or
    X-Forwarded-Host) cannot make it point at another site."""
    for host in ("app.contoso.com", "evil.example", "evil.example:443"):
        response = await forward_auth.browser.get(
            "/reports/2026?view=full",
            headers={**NAVIGATE, "Host": host, "X-Forwarded-Host": "evil.example"},
        )
        assert response.status == 302
        location = response.headers["Location"]
        assert location == SIGN_IN + "/reports/2026?view=full"
        assert urlsplit(location).netloc == ""
        assert urlsplit(location).scheme == ""
    assert forward_auth.app.paths == []


@pytest.mark.threat("FA-05")
async def test_a_return_target_nginx_passes_on_is_still_validated_by_the_gateway(
    forward_auth: ForwardAuth, idp: Any
) -> None:
    """FA-05: nginx copies a hostile target verbatim; the gateway's redirect validator refuses it
    before any sign-in starts."""
    response = await forward_auth.browser.get("//evil.example/landing")
    assert response.status == 302
    assert response.headers["Location"] == SIGN_IN + "//evil.example/landing"
    refused = await forward_auth.browser.get(response.headers["Location"])
    assert refused.status == 400
    assert "Location" not in refused.headers
    assert idp.requests("authorize") == []
    assert forward_auth.app.paths == []


@pytest.mark.threat("FA-03")
@pytest.mark.parametrize("base", [NAVIGATE, API], ids=["navigation", "api"])
async def test_anonymous_client_with_spoofed_identity_never_reaches_the_app(
    forward_auth: ForwardAuth, base: dict[str, str]
) -> None:
    headers = spoofed_headers(base)
    # A made-up session cookie too: the gateway knows no such session.
    headers.add("Cookie", "__Host-msal-gateway=" + secrets.token_urlsafe(32))
    response = await forward_auth.browser.session.get(
        forward_auth.nginx.url + "/spoofed-anonymous", headers=headers, allow_redirects=False
    )
    await response.read()
    assert response.status == 302
    assert response.headers["Location"] == SIGN_IN + "/spoofed-anonymous"
    assert forward_auth.app.paths == []


# --- signed in through nginx --------------------------------------------------------------------


@pytest.mark.threat("FA-03")
async def test_sign_in_through_nginx_then_the_app_gets_the_gateways_identity(
    forward_auth: ForwardAuth,
) -> None:
    fa = forward_auth
    await sign_in(fa, "/reports/2026?view=full")
    assert fa.browser.cookie(SESSION_COOKIE) is not None

    page = await fa.browser.get("/reports/2026?view=full")
    assert page.status == 200
    body = await page.json()
    assert (body["path"], body["query"]) == ("/reports/2026", "view=full")
    seen = upstream_headers(body)
    answer = await verify_answer(fa)
    for name in IDENTITY_HEADERS:
        assert seen.get(name.lower()) == ([answer[name]] if name in answer else None), name
    assert seen["x-ms-client-principal-name"] == ["alice@contoso.example"]
    assert seen["x-ms-client-principal-idp"] == ["aad"]
    assert seen["x-forwarded-user"] == [ALICE_OID]
    principal = json.loads(base64.b64decode(seen["x-ms-client-principal"][0]))
    assert {"typ": "preferred_username", "val": "alice@contoso.example"} in principal["claims"]
    # No bearer token unless GATEWAY_TOKENS__EXPOSE_IN_VERIFY is on.
    assert "authorization" not in seen
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    # The application never sees the gateway's cookies (the session id is a bearer credential).
    assert "cookie" not in seen


@pytest.mark.threat("FA-03", "CK-09")
@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        ("{session}", None),
        ("{session}; app_pref=dark", "app_pref=dark"),
        ("app_pref=dark; {session}", "app_pref=dark;"),
        (
            "a=1; {session}; b=2; __Host-msal-gateway-signin=pending; c=3",
            "a=1; b=2; c=3",
        ),
        ("__Host-msal-gateway-signin=pending; {session}", None),
        # Look-alike names are the application's own.
        (
            "x__Host-msal-gateway=1; {session}; msal-gateway-x=2",
            "x__Host-msal-gateway=1; msal-gateway-x=2",
        ),
    ],
)
async def test_the_app_gets_its_own_cookies_but_never_the_gateways(
    forward_auth: ForwardAuth, cookie: str, expected: str | None
) -> None:
    """The snippet's Cookie maps: the gateway's session and sign-in cookies are removed wherever
    they stand; everything else reaches the application."""
    fa = forward_auth
    await sign_in(fa)
    session = fa.browser.cookie(SESSION_COOKIE)
    assert session is not None
    header = cookie.format(session=f"__Host-msal-gateway={session}")
    async with (
        aiohttp.ClientSession() as client,
        client.get(fa.nginx.url + "/cookies", headers={**API, "Cookie": header}) as response,
    ):
        assert response.status == 200
        seen = upstream_headers(await response.json())
    # Let through as alice: the gateway itself got the session cookie.
    assert seen["x-ms-client-principal-name"] == ["alice@contoso.example"]
    assert seen.get("cookie") == (None if expected is None else [expected])


@pytest.mark.threat("FA-03")
@pytest.mark.parametrize("user", ["bob", "jose"])
async def test_a_clients_identity_headers_never_survive(
    forward_auth: ForwardAuth, user: str
) -> None:
    """FA-03: every identity header the app sees is the gateway's, including when the gateway
    sends none (bob has no groups, jose no email): then the app sees none, not the client's."""
    fa = forward_auth
    await sign_in(fa, "/", user)
    answer = await verify_answer(fa)
    assert ("X-Forwarded-Groups" in answer) is (user == "jose")
    assert ("X-Forwarded-Email" in answer) is (user == "bob")

    seen = await seen_by_app(fa, "/spoofed-signed-in", spoofed_headers(API))
    for name in IDENTITY_HEADERS:
        assert seen.get(name.lower()) == ([answer[name]] if name in answer else None), name
    for name, values in seen.items():
        for value in values:
            assert SPOOFED not in value, name
            assert SPOOFED_ADDRESS not in value, name
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert "forwarded" not in seen
    assert "x-auth-request-user" not in seen
    assert "remote-user" not in seen


@pytest.mark.threat("FA-03", "LK-05")
async def test_a_principal_with_many_groups_fits_through_nginx(
    make_forward_auth: MakeForwardAuth, trust: dict[str, Any], idp: Any
) -> None:
    """The verify answer can carry kilobytes of identity headers: nginx must not turn a user
    with many groups into a 500 (the snippet's proxy_buffer_size)."""
    idp.set_groups_overage_limit(1000)  # carol's 250 groups travel in her token
    fa = await make_forward_auth(groups={"max_header_bytes": 12000}, **trust)
    await sign_in(fa, "/", "carol")
    answer = await verify_answer(fa)
    assert sum(len(value) for value in answer.values()) > 8192  # over nginx's default buffer
    seen = await seen_by_app(fa, "/groups")
    assert len(seen["x-forwarded-groups"][0].split(",")) == 250
    for name in IDENTITY_HEADERS:
        assert seen.get(name.lower()) == ([answer[name]] if name in answer else None), name


@pytest.mark.threat("FA-05")
async def test_a_query_with_an_ampersand_comes_back_shortened_never_elsewhere(
    forward_auth: ForwardAuth,
) -> None:
    """The snippet's documented limit: nginx cannot URL-encode $request_uri, so the return
    target loses everything after the query's first "&"; the user still lands on the app."""
    response = await forward_auth.browser.sign_in("/search?q=a&page=2")
    assert response.status == 302, await response.text()
    assert response.headers["Location"] == "/search?q=a"


# --- per-path rules need the original target ----------------------------------------------------

RULES = [
    {"path": "/admin/", "allow": "deny"},
    {"path": "/orders/", "methods": "DELETE", "allow": "deny"},
]
# A client's own copies of the headers that name the original request (nginx's and Traefik's).
FORGED_TARGET = {
    "X-Original-URI": "/fine",
    "X-Original-Method": "GET",
    "X-Forwarded-Uri": "/fine",
    "X-Forwarded-Method": "GET",
}
TRUSTED = TRUST["nginx-trusted"]


async def denied_everywhere(fa: ForwardAuth) -> tuple[int, int]:
    """Ask for a denied path and a denied method, plainly and with a forged original target;
    the app must never see either. Returns the last statuses."""
    for headers in (API, {**API, **FORGED_TARGET}):
        denied = await fa.browser.get("/admin/users", headers=headers)
        assert denied.status != 200
        deleted = await fa.browser.session.delete(
            fa.nginx.url + "/orders/7", headers=headers, allow_redirects=False
        )
        await deleted.read()
        assert deleted.status != 200
    assert not any(unquote(p).startswith(("/admin/", "/orders/")) for p in fa.app.paths)
    return denied.status, deleted.status


@pytest.mark.threat("PA-19")
async def test_rules_apply_to_the_original_request_a_trusted_nginx_asks_about(
    make_forward_auth: MakeForwardAuth,
) -> None:
    """X-Original-URI/-Method name the request nginx asks about; the gateway applies its rules
    to it, and a client's own copies cannot change it (nginx overwrites them)."""
    fa = await make_forward_auth(policy={"rules": RULES}, **TRUSTED)
    await sign_in(fa)
    assert await denied_everywhere(fa) == (403, 403)
    assert (await fa.browser.get("/orders/7", headers=API)).status == 200
    assert (await fa.browser.get("/fine", headers=API)).status == 200


@pytest.mark.threat("PA-19")
async def test_rules_are_not_bypassed_when_nginx_is_not_trusted(
    make_forward_auth: MakeForwardAuth,
) -> None:
    """Misconfiguration: rules, but GATEWAY_PROXY__TRUSTED_PROXIES does not name nginx. The
    gateway cannot tell which request nginx asks about; a denied path must still never pass."""
    fa = await make_forward_auth(policy={"rules": RULES})
    # Every forward-auth answer is now a refusal, so sign in at the gateway's own endpoint.
    start = await fa.browser.get("/.auth/login/aad")
    auth = await fa.browser.authorize(start.headers["Location"])
    assert (await fa.browser.deliver(auth)).status == 302
    assert await denied_everywhere(fa) == (403, 403)
    allowed_elsewhere = await fa.browser.get("/reports/q1", headers=API)
    assert allowed_elsewhere.status == 403  # fails closed everywhere, loudly


@pytest.mark.threat("PA-03")
async def test_an_encoded_path_cannot_dodge_a_rule(make_forward_auth: MakeForwardAuth) -> None:
    """nginx hands the app the raw target, and the app decodes it: a rule for /admin/ must hold
    for /%61dmin/ too (or the target must be refused as ambiguous)."""
    fa = await make_forward_auth(policy={"rules": RULES}, **TRUSTED)
    await sign_in(fa)
    # encoded=True: sent byte for byte (yarl would otherwise turn %61 back into "a").
    target = URL(fa.nginx.url + "/%61dmin/users", encoded=True)
    async with fa.browser.session.get(target, headers=API, allow_redirects=False) as response:
        await response.read()
    assert response.status != 200
    assert not any(unquote(p).startswith("/admin/") for p in fa.app.paths)


# --- failing closed (FA-01) ---------------------------------------------------------------------


@pytest.mark.threat("FA-01")
async def test_verify_unreachable_is_a_500_and_nothing_reaches_the_app(
    launch: Launch,
    trust: dict[str, Any],
    app_server: RecordingUpstream,
    start_nginx: StartNginx,
) -> None:
    """FA-01: nginx's auth subrequest pointed at a port nobody listens on. Even a client with a
    valid session gets nginx's 500, never the application."""
    gateway = await launch(**FORWARD_AUTH_MODE, **trust)
    # Signed in at the gateway itself: in this mode nothing of its own redirects to sign-in.
    start = await gateway.browser.get("/.auth/login/aad")
    auth = await gateway.browser.authorize(start.headers["Location"])
    assert (await gateway.browser.deliver(auth)).status == 302
    assert (await gateway.browser.get("/.auth/verify", headers=API)).status == 200
    session = gateway.browser.cookie(gateway.settings.session_cookie_name)
    assert session is not None
    nginx = start_nginx(
        gateway=address(gateway.url),
        app=app_server.address,
        verify_url=f"http://127.0.0.1:{free_port()}/.auth/verify",
    )
    cookie = {"Cookie": f"{gateway.settings.session_cookie_name}={session}"}
    async with aiohttp.ClientSession() as client:
        for headers in (NAVIGATE, API, {**NAVIGATE, **cookie}, {**API, **cookie}):
            async with client.get(
                nginx.url + "/fa01-verify-down", headers=headers, allow_redirects=False
            ) as response:
                body = await response.text()
                assert response.status == 500
                assert "Location" not in response.headers
                for name in IDENTITY_HEADERS:
                    assert name not in response.headers
                assert "alice" not in body
    assert app_server.paths == []
    assert "auth request unexpected status: 502" in nginx.logs()


@pytest.mark.threat("FA-01")
async def test_store_outage_is_a_500_and_nothing_reaches_the_app(
    make_forward_auth: MakeForwardAuth, trust: dict[str, Any]
) -> None:
    """FA-01: the session store goes away under a signed-in user. /.auth/verify answers 5xx
    (never 2xx, never 401-so-sign-in-again), which nginx turns into a 500."""
    redis = RedisServer().start()
    try:
        fa = await make_forward_auth(
            **shared_redis(redis.url),
            **trust,
        )
        await sign_in(fa, "/before")
        assert (await fa.browser.get("/before", headers=API)).status == 200
        redis.stop()
        # The gateway's session cache serves a copy until it learns that Redis is gone (its
        # notice feed drops, within milliseconds); from then on every request needs the store.
        cache = fa.gateway.app[SESSIONS].cache
        for _ in range(200):
            if cache is None or not cache.following:
                break
            await asyncio.sleep(0.01)
        for headers in (NAVIGATE, API):
            response = await fa.browser.get("/fa01-store-down", headers=headers)
            assert response.status == 500
            assert "Location" not in response.headers
        assert "/fa01-store-down" not in fa.app.paths
    finally:
        redis.cleanup()


@pytest.mark.threat("FA-03", "HD-07", "HD-09", "PA-17")
async def test_the_client_s_forwarding_and_override_headers_never_reach_the_app(
    forward_auth: ForwardAuth,
) -> None:
    """The names the gateway strips in its proxy mode are stripped by the shipped nginx snippet
    too (review finding): client copies of forwarding facts, the original request's names,
    method overrides and other identity names, in both the signed-in and the public case."""
    fa = forward_auth
    await sign_in(fa, "/", "alice")
    names = sorted((FORWARDING_HEADERS | GATEWAY_IDENTITY_HEADERS) - {"authorization"})
    headers: CIMultiDict[str] = CIMultiDict(API)
    for name in names:
        headers.add(name, SPOOFED)
    seen = await seen_by_app(fa, "/forwarding", headers)
    for name, values in seen.items():
        assert all(SPOOFED not in value for value in values), name
    assert seen.get("x-forwarded-host") == ["127.0.0.1"]  # nginx's $host, never the client's


# --- one gateway, two applications behind one nginx ----------------------------------------------


def spoofed_query(headers: CIMultiDict[str]) -> CIMultiDict[str]:
    """`headers` plus forged copies of what nginx tells the gateway about the original request."""
    forged: CIMultiDict[str] = CIMultiDict(headers)
    for name, value in FORGED_TARGET.items():
        forged.add(name, value)
    return forged


def assert_only_the_gateways_identity(
    seen: dict[str, list[str]], answer: dict[str, str], user: str
) -> None:
    for name in IDENTITY_HEADERS:
        assert seen.get(name.lower()) == ([answer[name]] if name in answer else None), name
    assert seen["x-ms-client-principal-name"] == [user]
    for name, values in seen.items():
        for value in values:
            assert SPOOFED not in value, name
            assert SPOOFED_ADDRESS not in value, name
    assert "cookie" not in seen  # nor the gateway's session id


@pytest.mark.threat("FA-03", "FA-05")
async def test_one_sign_in_reaches_both_applications_and_one_sign_out_ends_both(
    forward_auth: ForwardAuth, idp: Any
) -> None:
    """The gateway relays nothing (forward-auth mode, no upstream); nginx asks it about each
    request for either application. A browser signs in once, through the first application's
    redirect, then reaches both with the gateway's identity headers and never its own forged ones;
    signing out ends its access to both, and its old cookie opens neither."""
    fa = forward_auth
    assert fa.gateway.settings.upstream is None
    assert UPSTREAM_POOL not in fa.gateway.app

    # Not signed in: either application sends the browser to sign-in, and neither sees anything.
    for path in ("/app2/inbox?folder=7", "/reports/q1"):
        response = await fa.browser.get(path, headers=spoofed_query(spoofed_headers(NAVIGATE)))
        assert response.status == 302, path
        assert response.headers["Location"] == SIGN_IN + path
    assert fa.app.paths == fa.app2.paths == []

    # One sign-in, started from the second application, lands back on it.
    response = await fa.browser.get("/app2/inbox?folder=7")
    start = await fa.browser.get(response.headers["Location"])
    assert start.status == 302
    assert start.headers["Location"].startswith(idp.authority)
    callback = await fa.browser.deliver(await fa.browser.authorize(start.headers["Location"]))
    assert callback.status == 302
    assert callback.headers["Location"] == "/app2/inbox?folder=7"
    session = fa.browser.cookie(SESSION_COOKIE)
    assert session is not None
    answer = await verify_answer(fa)

    # Both applications, each for its own paths, get the gateway's identity and nothing forged.
    for app, other, path in ((fa.app2, fa.app, "/app2/inbox?folder=7"), (fa.app, fa.app2, "/q1")):
        mark, other_mark = app.mark(), other.mark()
        plain_path, _, query = path.partition("?")
        for headers in (NAVIGATE, API):
            forged = spoofed_query(spoofed_headers(headers))
            response = await fa.browser.get(path, headers=forged)
            assert response.status == 200, path
            body = await response.json()
            assert (body["path"], body["query"]) == (plain_path, query)
            assert_only_the_gateways_identity(
                upstream_headers(body), answer, "alice@contoso.example"
            )
        assert [seen.raw_path for seen in app.since(mark)] == [path] * 2
        assert other.since(other_mark) == []

    # One sign-out, through nginx's /.auth/, ends the session for both applications.
    signed_out = await fa.browser.get("/.auth/logout", headers=NAVIGATE)
    assert signed_out.status == 302
    assert fa.browser.cookie(SESSION_COOKIE) in (None, "")
    marks = fa.app.mark(), fa.app2.mark()
    for path in ("/app2/inbox", "/q1"):
        response = await fa.browser.get(path, headers=NAVIGATE)
        assert response.status == 302, path
        assert response.headers["Location"] == SIGN_IN + path
    # The old cookie, replayed, is a session the gateway has ended: refused for both.
    async with aiohttp.ClientSession() as client:
        for path in ("/app2/inbox", "/q1"):
            async with client.get(
                fa.nginx.url + path,
                headers={**API, "Cookie": f"{SESSION_COOKIE}={session}"},
                allow_redirects=False,
            ) as response:
                await response.read()
                assert response.status == 302, path  # nginx's @signin for any 401
        async with client.get(
            fa.nginx.url + "/.auth/verify",
            headers={**API, "Cookie": f"{SESSION_COOKIE}={session}"},
        ) as response:
            assert response.status == 401
    assert (fa.app.since(marks[0]), fa.app2.since(marks[1])) == ([], [])


@pytest.mark.threat("FA-03")
async def test_the_assertion_reaches_both_applications_and_a_forged_one_neither(
    make_forward_auth: MakeForwardAuth,
) -> None:
    """With assertions on, nginx copies the verify answer's X-Gateway-Assertion to each
    application (audience GATEWAY_ASSERTION__AUDIENCE); a client's own never gets through."""
    audience = "https://app.test"
    fa = await make_forward_auth(assertion={"enabled": True, "audience": audience}, **TRUSTED)
    await sign_in(fa, "/app2/")
    jwks = await (await fa.browser.get("/.auth/keys", headers=API)).json()
    keys = jwt.PyJWKSet.from_dict(jwks).keys
    for path in ("/app2/data", "/data"):
        headers = {**API, "X-Gateway-Assertion": "forged.jwt.value"}
        seen = await seen_by_app(fa, path, headers)
        [token] = seen["x-gateway-assertion"]
        kid = jwt.get_unverified_header(token)["kid"]
        [key] = [key for key in keys if key.key_id == kid]
        claims = jwt.decode(
            token, key, algorithms=["ES256"], audience=audience, issuer="https://app.test"
        )
        assert claims["preferred_username"] == "alice@contoso.example"
