"""Cookie ids and their Set-Cookie attributes, pure functions of gateway.auth.cookies: minted ids
carry 256 bits, a malformed value reads as no id, and Set-Cookie is host-only, HttpOnly and
Secure with a bounded lifetime (THREATS.md A6 end to end: tests/security/test_cookies.py).
Requests are aiohttp's own mocked requests.
"""

from __future__ import annotations

import base64
import re
from typing import Final, Literal

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from support.gateway import SESSION_COOKIE

from gateway.auth.cookies import clear_cookie, mint_id, read_id, set_cookie
from gateway.config.settings import CookieSpec

HOST_ONLY: Final = CookieSpec(SESSION_COOKIE, secure=True)

URL_SAFE: Final = re.compile(r"^[A-Za-z0-9_-]+$")


def request_with_cookie(header: str) -> web.Request:
    return make_mocked_request("GET", "/", headers={"Cookie": header})


# ---- mint_id ----


def test_minted_id_carries_at_least_256_bits_and_is_url_safe() -> None:
    value = mint_id()
    assert URL_SAFE.match(value)
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    assert len(raw) * 8 >= 256


def test_minted_ids_are_distinct() -> None:
    ids = {mint_id() for _ in range(2000)}
    assert len(ids) == 2000


def test_minted_ids_do_not_share_a_prefix() -> None:
    prefixes = {mint_id()[:8] for _ in range(200)}
    assert len(prefixes) == 200


# ---- read_id ----


def test_read_id_returns_a_minted_id() -> None:
    value = mint_id()
    assert (
        read_id(request_with_cookie(f"other=1; {SESSION_COOKIE}={value}"), SESSION_COOKIE) == value
    )


@pytest.mark.parametrize(
    "value", ["a" * 32, "Z" * 64, "0123456789-_" * 3], ids=["32", "64", "mixed"]
)
def test_read_id_accepts_the_id_shape_at_its_bounds(value: str) -> None:
    assert read_id(request_with_cookie(f"{SESSION_COOKIE}={value}"), SESSION_COOKIE) == value


def test_absent_cookie_reads_as_no_id() -> None:
    assert read_id(request_with_cookie("unrelated=1"), SESSION_COOKIE) is None
    assert read_id(make_mocked_request("GET", "/"), SESSION_COOKIE) is None


_VALID: Final = "A" * 43
MALFORMED: Final = [
    "",
    "short",
    "a" * 31,
    "a" * 65,
    "a" * 4096,
    _VALID[:-1] + "+",
    _VALID[:-1] + "/",
    _VALID + "=",
    _VALID[:-2] + "==",
    _VALID[:-1] + ".",
    _VALID[:-1] + "%",
    _VALID[:-3] + "%41",
    _VALID[:-1] + "!",
    _VALID[:-1] + "~",
    _VALID[:-1] + ":",
    "../../../../etc/passwd" + "a" * 20,
    "*" * 43,
    "gw:session:" + "a" * 32,
]


@pytest.mark.parametrize("value", MALFORMED, ids=lambda v: f"{v[:12]}..len{len(v)}")
def test_read_id_treats_a_malformed_value_as_absent(value: str) -> None:
    assert read_id(request_with_cookie(f"{SESSION_COOKIE}={value}"), SESSION_COOKIE) is None


def test_read_id_checks_shape_only_so_a_flipped_character_reads_as_another_id() -> None:
    value = mint_id()
    flipped = ("B" if value[0] != "B" else "C") + value[1:]
    assert read_id(request_with_cookie(f"{SESSION_COOKIE}={flipped}"), SESSION_COOKIE) == flipped
    assert flipped != value


# ---- set_cookie / clear_cookie ----


@pytest.mark.parametrize("same_site", ["Lax", "Strict", "None"])
def test_set_cookie_is_host_only_httponly_secure_with_a_max_age(
    same_site: Literal["Lax", "None", "Strict"],
) -> None:
    response = web.Response()
    value = mint_id()
    set_cookie(response, HOST_ONLY, value, max_age=3600, same_site=same_site)
    morsel = response.cookies[SESSION_COOKIE]
    assert morsel.value == value
    assert morsel["httponly"] is True
    assert morsel["secure"] is True
    assert morsel["samesite"] == same_site
    assert morsel["path"] == "/"
    assert str(morsel["max-age"]) == "3600"
    assert morsel["domain"] == ""
    assert morsel["expires"] == ""
    header = morsel.OutputString()
    for attribute in ("HttpOnly", "Secure", f"SameSite={same_site}", "Path=/", "Max-Age=3600"):
        assert attribute in header
    assert "Domain" not in header


def test_set_cookie_defaults_to_samesite_lax() -> None:
    response = web.Response()
    set_cookie(response, HOST_ONLY, mint_id(), max_age=60)
    assert response.cookies[SESSION_COOKIE]["samesite"] == "Lax"


def test_set_cookie_on_plain_http_is_not_secure_but_still_httponly() -> None:
    response = web.Response()
    set_cookie(response, CookieSpec("msal-gateway", secure=False), mint_id(), max_age=60)
    morsel = response.cookies["msal-gateway"]
    assert not morsel["secure"]
    assert morsel["httponly"] is True
    assert "Secure" not in morsel.OutputString()


def test_cookie_header_stays_far_below_the_browser_limit() -> None:
    response = web.Response()
    set_cookie(response, HOST_ONLY, mint_id(), max_age=86_400, same_site="None")
    assert len(response.cookies[SESSION_COOKIE].OutputString()) < 4096 // 8


def test_clear_cookie_expires_it_with_the_same_scope() -> None:
    response = web.Response()
    clear_cookie(response, HOST_ONLY)
    morsel = response.cookies[SESSION_COOKIE]
    assert morsel.value == ""
    assert str(morsel["max-age"]) == "0"
    assert morsel["path"] == "/"
    assert morsel["secure"] is True
    assert morsel["httponly"] is True


def test_a_cookie_under_a_path_prefix_and_a_shared_domain_is_set_and_cleared_with_both() -> None:
    scoped = CookieSpec(
        "__Secure-msal-gateway-payroll", secure=True, path="/payroll", domain="apps.example.com"
    )
    response = web.Response()
    set_cookie(response, scoped, mint_id(), max_age=60)
    header = response.cookies[scoped.name].OutputString()
    assert "Path=/payroll" in header
    assert "Domain=apps.example.com" in header
    cleared = web.Response()
    clear_cookie(cleared, scoped)
    morsel = cleared.cookies[scoped.name]
    assert str(morsel["max-age"]) == "0"
    assert (morsel["path"], morsel["domain"]) == ("/payroll", "apps.example.com")
