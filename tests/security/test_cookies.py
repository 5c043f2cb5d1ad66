"""Cookies (THREATS.md A6: CK-01 to CK-09), end to end against in-process gateways on an https
public URL, and through the pure header functions that keep the gateway's cookies away from the
application.

Cookies are read from the Set-Cookie headers the gateway actually sends; tampered and duplicated
cookies are sent by hand.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Final

import aiohttp
import pytest
from multidict import CIMultiDict
from support.browser import API, Browser
from support.fixtures import Launch, Running, assert_signed_out, signed_in
from support.gateway import PUBLIC_URL, SESSION_COOKIE, SIGNIN_COOKIE, idp_ssl
from support.headers import OWN_COOKIES, clean
from support.jwts import JWT_MARK
from support.upstream import upstream_headers

from gateway.auth.headers import response_headers
from gateway.keys import STORAGE

ID_SHAPE: Final = re.compile(r"^[A-Za-z0-9_-]{43}$")
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


@pytest.mark.threat("CK-01")
@pytest.mark.parametrize("config", COOKIE_CONFIGS)
async def test_cookie_flags_on_every_set_cookie(launch: Launch, config: CookieConfig) -> None:
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


@pytest.mark.threat("CK-03")
@pytest.mark.parametrize("user", ["alice", "carol"])
async def test_cookie_is_an_opaque_id_even_for_250_groups(
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


@pytest.mark.threat("CK-05")
@pytest.mark.parametrize("tamper", list(TAMPERINGS), ids=list(TAMPERINGS))
async def test_tampered_session_id_reads_as_no_session(
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
        await assert_signed_out(gateway.url, client, value, "/ck05")
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


@pytest.mark.threat("CK-05")
@pytest.mark.parametrize("tamper", ["flip-middle", "truncate-one", "empty", "doubled"])
async def test_tampered_sign_in_cookie_signs_no_one_in(
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


@pytest.mark.threat("CK-07")
@pytest.mark.parametrize("attacker_value", ["own-session", "garbage"])
@pytest.mark.parametrize("layout", list(DUPLICATES), ids=list(DUPLICATES))
async def test_duplicate_cookie_names_never_let_the_attacker_win(
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


# ---- CK-09: the application never gets the gateway's cookies, nor sets them ----


@pytest.mark.threat("CK-09")
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


@pytest.mark.threat("CK-09")
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


@pytest.mark.threat("CK-09")
def test_each_cookie_header_is_filtered_separately() -> None:
    kept = clean([("Cookie", f"a=1; {SESSION_COOKIE}=s"), ("Cookie", f"{SIGNIN_COOKIE}=b; c=3")])
    assert kept.getall("Cookie") == ["a=1", "c=3"]


@pytest.mark.threat("CK-09")
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
