"""THREATS CK-07 and CK-09: one strict cookie parser reads and scrubs the gateway's cookies. A comma
never starts a cookie; a name of ours hidden after a comma, or sent twice, reads as absent; the
application never receives our cookies in any spelling and cannot set them through a comma.

Tables of hand-written layouts, a property over generated Cookie headers, and the real gateway
with two real sessions (alice the victim, bob the attacker with his own valid session)."""

from __future__ import annotations

from typing import Any, Final

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy
from support.browser import API
from support.fixtures import Running, signed_in
from support.upstream import upstream_headers

from gateway.auth.cookies import read_id, sets_named_cookie, without_named_cookies
from gateway.auth.headers import inbound_headers, response_headers
from security.test_cookies import two_sessions

pytestmark = pytest.mark.threat("CK-07", "CK-09")

SESSION: Final = "__Host-msal-gateway"
SIGNIN: Final = "__Host-msal-gateway-signin"
OWN: Final = frozenset({SESSION, SIGNIN})
REAL: Final = "R" * 43
EVIL: Final = "E" * 43
ALICE: Final = "alice@contoso.example"
BOB: Final = "bob@contoso.example"


def cookie_request(*headers: str) -> Any:
    return make_mocked_request("GET", "/", headers=CIMultiDict(("Cookie", h) for h in headers))


# Cookie header(s) -> what the gateway reads as its session id.
READS: Final = {
    "plain": ([f"{SESSION}={REAL}"], REAL),
    "beside-others": ([f"theme=dark; {SESSION}={REAL}; lang=en"], REAL),
    "no-space": ([f"a=1;{SESSION}={REAL}"], REAL),
    "tossed-alone": ([f"x=1, {SESSION}={EVIL}"], None),
    "tossed-before-real": ([f"x=1, {SESSION}={EVIL}; {SESSION}={REAL}"], None),
    "tossed-after-real": ([f"{SESSION}={REAL}; x=1, {SESSION}={EVIL}"], None),
    "tossed-no-space": ([f"x=1,{SESSION}={EVIL}"], None),
    "tossed-in-a-name": ([f"x, {SESSION}={EVIL}"], None),
    "tossed-twice-deep": ([f"x=1, y=2, {SESSION}={EVIL}"], None),
    "comma-joined-pair": ([f"{SESSION}={REAL}, {SESSION}={EVIL}"], None),
    "real-then-comma-value": ([f"{SESSION}={REAL}, theme=dark"], None),  # value not id-shaped
    "duplicate": ([f"{SESSION}={REAL}; {SESSION}={EVIL}"], None),
    "two-headers": ([f"{SESSION}={REAL}", f"{SESSION}={EVIL}"], None),
    "two-headers-one-tossed": ([f"{SESSION}={REAL}", f"x=1, {SESSION}={EVIL}"], None),
    "other-cookie-with-comma": ([f"prefs=a,b; {SESSION}={REAL}"], REAL),
    "similar-name": ([f"{SESSION}x={EVIL}; {SESSION}={REAL}"], REAL),
    "name-with-space-inside": ([f"{SESSION} ={REAL}"], REAL),  # whitespace around "=" is OWS
    "empty": ([""], None),
}


@pytest.mark.parametrize("layout", list(READS), ids=list(READS))
def test_ck09_reading(layout: str) -> None:
    headers, expected = READS[layout]
    assert read_id(cookie_request(*headers), SESSION) == expected


SCRUBS: Final = {
    "ours-removed": (f"theme=dark; {SESSION}={REAL}; {SIGNIN}={REAL}", "theme=dark"),
    "tossed-part-removed": (f"theme=dark; x=1, {SESSION}={EVIL}; lang=en", "theme=dark; lang=en"),
    "tossed-in-a-name": (f"x, {SESSION}={EVIL}; a=1", "a=1"),
    "others-kept-as-sent": ("a=1;b=2, c=3", "a=1;b=2, c=3"),
    "only-ours": (f"{SESSION}={REAL}", ""),
}


@pytest.mark.parametrize("layout", list(SCRUBS), ids=list(SCRUBS))
def test_ck09_scrubbing(layout: str) -> None:
    header, expected = SCRUBS[layout]
    assert without_named_cookies(header, OWN) == expected


SET_COOKIES: Final = {
    f"{SESSION}=planted; Path=/; Secure": True,
    f"{SIGNIN}=planted; Path=/": True,
    f"x=1, {SESSION}=planted; Path=/": True,
    f"x=1,{SESSION}=planted": True,
    f" {SESSION} = planted": True,
    "app_pref=dark; Path=/": False,
    "prefs=a,b; Path=/": False,
    f"app=1; Comment={SESSION}=x": False,  # attributes set nothing
}


@pytest.mark.parametrize("value", list(SET_COOKIES))
def test_ck09_the_application_cannot_set_our_cookies(value: str) -> None:
    expected = SET_COOKIES[value]
    assert sets_named_cookie(value, OWN) is expected
    kept = response_headers(
        [("Set-Cookie", value), ("Content-Type", "text/plain")], own_cookies=OWN
    )
    assert ("Set-Cookie" in kept) is not expected
    assert kept["Content-Type"] == "text/plain"


# ---- a property over generated headers ----------------------------------------------------------

names = st.sampled_from([SESSION, SIGNIN, "x", "theme", f"{SESSION}x", " " + SESSION])
values = st.sampled_from([REAL, EVIL, "1", "", "a,b", f"{SESSION}"])
pairs = st.builds(lambda n, v: f"{n}={v}", names, values) | names
separators = st.sampled_from(["; ", ";", ", ", ","])


@st.composite
def cookie_headers(draw: st.DrawFn) -> str:
    parts = draw(st.lists(pairs, min_size=1, max_size=5))
    header = parts[0]
    for part in parts[1:]:
        header += draw(separators) + part
    return header


def lenient_names(header: str) -> list[str]:
    """Every name a parser that splits on both ";" and "," would see."""
    return [
        piece.partition("=")[0].strip() for chunk in header.split(";") for piece in chunk.split(",")
    ]


@given(cookie_headers())
def test_ck09_no_parser_finds_our_cookie_after_scrubbing(header: str) -> None:
    scrubbed = without_named_cookies(header, OWN)
    assert OWN.isdisjoint(lenient_names(scrubbed))
    kept = inbound_headers(CIMultiDictProxy(CIMultiDict({"Cookie": header})), cookie_names=OWN)
    assert OWN.isdisjoint(lenient_names(";".join(kept.getall("Cookie", []))))


@given(cookie_headers())
def test_ck09_a_session_is_read_only_when_every_parser_agrees(header: str) -> None:
    read = read_id(cookie_request(header), SESSION)
    if read is not None:
        # Exactly one mention under the most lenient split, and it is this value.
        assert lenient_names(header).count(SESSION) == 1
        strict = [
            chunk.partition("=")[2].strip()
            for chunk in header.split(";")
            if chunk.partition("=")[0].strip() == SESSION
        ]
        assert strict == [read]


# ---- the real gateway ---------------------------------------------------------------------------


TOSSED: Final = {
    "alone": lambda real, evil: [f"x=1, {SESSION}={evil}"],
    "before-the-victims": lambda real, evil: [f"x=1, {SESSION}={evil}; {SESSION}={real}"],
    "after-the-victims": lambda real, evil: [f"{SESSION}={real}; x=1, {SESSION}={evil}"],
    "in-a-second-header": lambda real, evil: [f"{SESSION}={real}", f"x=1, {SESSION}={evil}"],
}


@pytest.mark.parametrize("layout", list(TOSSED), ids=list(TOSSED))
async def test_ck09_a_tossed_cookie_never_signs_anyone_in(
    gateway: Running, idp: Any, layout: str
) -> None:
    real, attacker = await two_sessions(gateway, idp)
    headers: CIMultiDict[str] = CIMultiDict(API)
    for value in TOSSED[layout](real, attacker):
        headers.add("Cookie", value)
    async with aiohttp.ClientSession() as client:
        for path in ("/ck09", "/.auth/me", "/.auth/verify"):
            async with client.get(gateway.url + path, headers=headers) as response:
                body = await response.read()
                # Ambiguity reads as no session: neither bob (planted) nor alice.
                assert response.status == 401, (path, response.status, body[:200])
    # A plain request still works for the victim; a public path passes without a cookie of ours.
    page = await gateway.browser.get("/ck09", headers=API)
    assert upstream_headers(await page.json())["x-ms-client-principal-name"] == [ALICE]


async def test_ck09_the_application_never_receives_a_tossed_id(gateway: Running) -> None:
    await signed_in(gateway, user="alice")
    real = gateway.browser.cookie(SESSION)
    # A fresh client: a cookie jar would re-render the crafted header.
    async with aiohttp.ClientSession() as client:
        tossed = {**API, "Cookie": f"{SESSION}={real}; theme=dark; tossed=1, {SESSION}=x"}
        async with client.get(gateway.url + "/ck09", headers=tossed) as response:
            await response.read()
            assert response.status == 401
        signin_tossed = {**API, "Cookie": f"{SESSION}={real}; theme=dark; x=1, {SIGNIN}=S"}
        async with client.get(gateway.url + "/ck09", headers=signin_tossed) as response:
            assert response.status == 200
            received = upstream_headers(await response.json()).get("cookie", [])
    assert OWN.isdisjoint(lenient_names(";".join(received)))
    assert "theme=dark" in ";".join(received)
