"""Issue 14 item 7: every /.auth endpoint that reads a body answers bad input with a 4xx and
bounded work, never a 500, in a real gateway process run with PYTHONOPTIMIZE=1 (no assert can
stand in for a check); sign-out refuses a foreign Origin as well as Sec-Fetch-Site: cross-site."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Iterator
from typing import Any, Final

import aiohttp
import pytest
from support.gateway import PUBLIC_URL, GatewayProcess, settings_for
from support.threaded import ThreadedServer

pytestmark = pytest.mark.threat("HT-07", "OA-11")

ADMIN: Final = "a" * 40
FORM: Final = "application/x-www-form-urlencoded"
JSON: Final = "application/json"
MULTIPART: Final = "multipart/form-data; boundary=xyz"


@pytest.fixture(scope="module")
def gateway_url(idp_server: Any, upstream: ThreadedServer) -> Iterator[str]:
    settings = settings_for(idp_server, upstream.url, admin={"token": ADMIN})
    process = GatewayProcess(settings, extra_env={"PYTHONOPTIMIZE": "1"})
    try:
        asyncio.run(process.ready())
        yield process.url
    finally:
        process.stop()


CALLBACK: Final = "/.auth/login/aad/callback"
LOGOUT: Final = "/.auth/logout"
REVOKE: Final = "/.auth/admin/revoke"
ADMIN_HEADERS: Final = {"Authorization": f"Bearer {ADMIN}"}

# (path, content type, extra headers, body, status, error code)
BAD: Final = {
    "logout-broken-multipart": (LOGOUT, MULTIPART, {}, b"--xyz\r\nbroken", 415),
    "logout-multipart-no-boundary": (LOGOUT, "multipart/form-data", {}, b"x", 415),
    "logout-bad-utf8": (LOGOUT, FORM, {}, b"post_logout_redirect_uri=%FF%FE", 400),
    "logout-raw-non-ascii": (LOGOUT, FORM, {}, "a=\u00e9".encode(), 400),
    "logout-gzip": (LOGOUT, FORM, {"Content-Encoding": "gzip"}, gzip.compress(b"a=1"), 415),
    "logout-too-large": (LOGOUT, FORM, {}, b"a=" + b"x" * 200_000, 413),
    "logout-duplicate": (
        LOGOUT,
        FORM,
        {},
        b"post_logout_redirect_uri=/a&post_logout_redirect_uri=/b",
        400,
    ),
    "callback-multipart": (CALLBACK, MULTIPART, {}, b"--xyz--", 415),
    "callback-json": (CALLBACK, JSON, {}, b'{"state": "x"}', 415),
    "callback-duplicate-state": (CALLBACK, FORM, {}, b"state=a&state=b&code=c", 400),
    "callback-too-many-fields": (
        CALLBACK,
        FORM,
        {},
        b"&".join(b"f%d=1" % i for i in range(40)),
        400,
    ),
    "callback-empty": (CALLBACK, FORM, {}, b"", 400),
    "callback-no-state": (CALLBACK, FORM, {}, b"code=abc", 400),
    "callback-unknown-state": (CALLBACK, FORM, {}, b"code=abc&state=nope", 400),
    "revoke-not-json": (REVOKE, JSON, ADMIN_HEADERS, b"user=x", 400),
    "revoke-array": (REVOKE, JSON, ADMIN_HEADERS, b"[1]", 400),
    "revoke-number-user": (REVOKE, JSON, ADMIN_HEADERS, b'{"user": 5}', 400),
    "revoke-deep": (REVOKE, JSON, ADMIN_HEADERS, b"[" * 100_000, 413),
    "revoke-deep-small": (REVOKE, JSON, ADMIN_HEADERS, b"[" * 15_000, 400),
    "revoke-bad-utf8": (REVOKE, JSON, ADMIN_HEADERS, b'{"user": "\xff"}', 400),
    "revoke-too-large": (REVOKE, JSON, ADMIN_HEADERS, b'{"user": "' + b"x" * 20_000 + b'"}', 413),
    "revoke-gzip": (
        REVOKE,
        JSON,
        {**ADMIN_HEADERS, "Content-Encoding": "gzip"},
        gzip.compress(b"{}"),
        415,
    ),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
async def test_bad_bodies_are_a_clear_4xx(gateway_url: str, case: str) -> None:
    path, content_type, extra, body, status = BAD[case]
    headers = {"Accept": "application/json", "Content-Type": content_type, **extra}
    async with (
        aiohttp.ClientSession(auto_decompress=False) as client,
        client.post(gateway_url + path, data=body, headers=headers, allow_redirects=False) as r,
    ):
        answer = await r.json()
        assert r.status == status, answer
        assert set(answer) >= {"error"} and answer["error"] != "internal_error"
    async with (
        aiohttp.ClientSession() as client,
        client.get(gateway_url + "/.auth/readyz") as ready,
    ):
        assert ready.status == 200


async def test_a_query_field_sent_twice_is_refused(gateway_url: str) -> None:
    async with (
        aiohttp.ClientSession() as client,
        client.get(
            gateway_url + CALLBACK + "?state=a&state=b&code=c",
            headers={"Accept": "application/json"},
        ) as response,
    ):
        assert response.status == 400


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Origin": "https://evil.example"}, 403),
        ({"Origin": "null"}, 403),
        ({"Origin": "https://sub.app.test"}, 403),  # a sibling host is another site's page
        ({"Origin": PUBLIC_URL + ":443"}, 403),  # not the origin as browsers serialise it
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "no-cors"}, 403),  # a sibling host
        ({"Sec-Fetch-Site": "none"}, 302),  # typed in, or a bookmark
        ({"Origin": PUBLIC_URL}, 302),
        ({"Sec-Fetch-Site": "same-origin", "Origin": PUBLIC_URL}, 302),
        ({}, 302),  # neither: a plain form post from an old browser, or a script of the user
    ],
)
async def test_sign_out_refuses_other_sites(
    gateway_url: str, headers: dict[str, str], status: int
) -> None:
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            gateway_url + LOGOUT,
            data=b"",
            headers={"Accept": "application/json", "Content-Type": FORM, **headers},
            allow_redirects=False,
        ) as response,
    ):
        assert response.status == status


async def test_a_field_in_both_the_query_and_the_form_is_refused(gateway_url: str) -> None:
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            gateway_url + LOGOUT + "?post_logout_redirect_uri=/a",
            data=b"post_logout_redirect_uri=/b",
            headers={"Accept": "application/json", "Content-Type": FORM},
            allow_redirects=False,
        ) as response,
    ):
        assert response.status == 400
