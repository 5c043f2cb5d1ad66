"""One sign-in across subdomains (issue 16 item 2): GATEWAY_SESSION__COOKIE_DOMAIN=apps.test and
GATEWAY_SIGNIN__RETURN_HOSTS=*.apps.test, with the redirect URI on auth.apps.test alone.

The hosts are reached as an ingress terminating TLS would pass them on: a client whose resolver
sends every *.apps.test name to the loopback gateway, each request carrying its site's Host, and a
cookie jar that treats those sites as secure origins. So Domain= and __Secure- cookies are stored
and sent back by host, as a browser would."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, parse_qsl, quote, urlsplit

import aiohttp
import pytest
from aiohttp import ClientResponse, CookieJar
from aiohttp.abc import AbstractResolver, ResolveResult
from support.browser import API, NAVIGATE, parse_form
from support.fixtures import Launch, Running
from support.gateway import idp_ssl
from yarl import URL

DOMAIN = "apps.test"
AUTH = f"https://auth.{DOMAIN}"
SITES = ("auth", "wiki", "grafana")
SUBDOMAINS: dict[str, Any] = {
    "public_url": AUTH,
    "session": {"cookie_domain": DOMAIN},
    "signin": {"return_hosts": f"*.{DOMAIN}"},
}


class _Loopback(AbstractResolver):
    """Every name resolves to the loopback gateway (an ingress routing *.apps.test to it)."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host, host="127.0.0.1", port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        return None


class SiteBrowser:
    """A cookie-keeping client for https://<site>.apps.test/... through one gateway."""

    def __init__(self, running: Running, idp: Any) -> None:
        self.port = URL(running.url).port
        self.idp_ssl = idp_ssl(idp.ca_path)
        origins = [URL(f"http://{site}.{DOMAIN}:{self.port}") for site in SITES]
        self.jar = CookieJar(treat_as_secure_origin=origins)
        self.session = aiohttp.ClientSession(
            cookie_jar=self.jar, connector=aiohttp.TCPConnector(resolver=_Loopback())
        )

    async def close(self) -> None:
        await self.session.close()

    def _local(self, url: str) -> tuple[str, str]:
        parts = urlsplit(url)
        assert parts.scheme == "https" and parts.hostname, url
        rest = parts.path + (f"?{parts.query}" if parts.query else "")
        return f"http://{parts.hostname}:{self.port}{rest}", parts.hostname

    async def get(self, url: str, headers: dict[str, str] | None = None) -> ClientResponse:
        local, host = self._local(url)
        response = await self.session.get(
            local, headers={**(headers or NAVIGATE), "Host": host}, allow_redirects=False
        )
        await response.read()
        return response

    async def post(self, url: str, headers: dict[str, str], **kw: Any) -> ClientResponse:
        local, host = self._local(url)
        response = await self.session.post(
            local, headers={**headers, "Host": host}, allow_redirects=False, **kw
        )
        await response.read()
        return response

    async def sign_in_from(self, url: str, user: str = "alice") -> ClientResponse:
        """Open `url` signed out and walk the whole sign-in; the callback's answer."""
        first = await self.get(url)
        assert first.status == 302, first.status
        start = await self.get(first.headers["Location"])
        assert start.status == 302, start.status
        async with self.session.get(
            start.headers["Location"],
            headers={**NAVIGATE, "X-DevIdp-User": user},
            allow_redirects=False,
            ssl=self.idp_ssl,
        ) as authorize:
            action, _, fields = parse_form(await authorize.text())
        return await self.post(action, NAVIGATE, data=fields)

    def cookies(self) -> list[Any]:
        return list(self.jar)


@pytest.fixture
async def sites(launch: Launch, idp: Any) -> AsyncIterator[tuple[Running, SiteBrowser]]:
    running = await launch(**SUBDOMAINS)
    browser = SiteBrowser(running, idp)
    try:
        yield running, browser
    finally:
        await browser.close()


def _echoed(body: dict[str, Any], name: str) -> list[str]:
    return [value for key, value in body["headers"] if key.lower() == name.lower()]


async def test_one_sign_in_reaches_every_return_host(
    sites: tuple[Running, SiteBrowser],
) -> None:
    _, browser = sites
    # A sibling host sends the browser to sign in on the public host, and gets it back.
    first = await browser.get(f"https://wiki.{DOMAIN}/page?x=1")
    assert first.status == 302
    location = urlsplit(first.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == AUTH + "/.auth/login/aad"
    assert parse_qs(location.query) == {
        "post_login_redirect_uri": [f"https://wiki.{DOMAIN}/page?x=1"]
    }
    browser.jar.clear()

    done = await browser.sign_in_from(f"https://wiki.{DOMAIN}/page?x=1")
    assert done.status == 302
    assert done.headers["Location"] == f"https://wiki.{DOMAIN}/page?x=1"
    set_cookie = done.headers["Set-Cookie"]
    assert set_cookie.startswith("__Secure-msal-gateway=")
    assert f"Domain={DOMAIN}" in set_cookie and "Secure" in set_cookie
    binding = [c for c in browser.cookies() if c.key.endswith("-signin")]
    assert [c.key for c in binding] == ["__Host-msal-gateway-signin"]
    # Host-only, on the public host: the siblings never receive the sign-in binding.
    wiki = browser.jar.filter_cookies(URL(f"http://wiki.{DOMAIN}:{browser.port}/"))
    assert list(wiki) == ["__Secure-msal-gateway"]

    for site in ("wiki", "grafana"):
        answer = await browser.get(f"https://{site}.{DOMAIN}/page", headers=API)
        assert answer.status == 200, site
        echoed = await answer.json()
        # The application is told its own host, never the public host's nor an arbitrary one.
        assert _echoed(echoed, "Host") == [f"{site}.{DOMAIN}"]
        assert _echoed(echoed, "X-Forwarded-Host") == [f"{site}.{DOMAIN}"]
        assert _echoed(echoed, "X-Forwarded-User")
        assert "msal-gateway" not in " ".join(_echoed(echoed, "Cookie"))


async def test_a_host_outside_the_list_is_never_named_to_the_app(
    sites: tuple[Running, SiteBrowser],
) -> None:
    running, browser = sites
    await browser.sign_in_from(f"https://wiki.{DOMAIN}/")
    session = next(c for c in browser.cookies() if c.key == "__Secure-msal-gateway")
    async with aiohttp.ClientSession() as client:
        for host in ("evil.example", DOMAIN, f"wiki.{DOMAIN}:8443", f"wiki.{DOMAIN}.evil.example"):
            async with client.get(
                running.url + "/page",
                headers={**API, "Host": host, "Cookie": f"__Secure-msal-gateway={session.value}"},
            ) as answer:
                assert answer.status == 200, host
                echoed = await answer.json()
            assert _echoed(echoed, "X-Forwarded-Host") == [f"auth.{DOMAIN}"], host


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        f"https://{DOMAIN}/",  # the wildcard names the hosts under the domain, not itself
        f"http://wiki.{DOMAIN}/",  # never in clear
        f"https://wiki.{DOMAIN}.evil.example/",
        f"https://evil.example@wiki.{DOMAIN}/",
        f"https://wiki.{DOMAIN}:8443/",
        f"https://wiki.{DOMAIN}/.auth/me",
        f"https://wiki.{DOMAIN}/a/../b",
        f"//wiki.{DOMAIN}/",
    ],
)
async def test_return_targets_off_the_list_are_refused(
    sites: tuple[Running, SiteBrowser], target: str
) -> None:
    _, browser = sites
    for endpoint, name in (
        ("/.auth/login/aad", "post_login_redirect_uri"),
        ("/.auth/logout", "post_logout_redirect_uri"),
    ):
        answer = await browser.get(f"{AUTH}{endpoint}?{name}={quote(target, safe='')}", API)
        assert answer.status == 400, (endpoint, target, answer.status)


async def test_sign_out_on_a_sibling_host_ends_the_shared_session(
    sites: tuple[Running, SiteBrowser],
) -> None:
    _, browser = sites
    await browser.sign_in_from(f"https://wiki.{DOMAIN}/")
    # Another site cannot sign the user out; the sibling itself can.
    refused = await browser.post(
        f"https://wiki.{DOMAIN}/.auth/logout", {**API, "Origin": "https://evil.example"}
    )
    assert refused.status == 403
    target = f"https://grafana.{DOMAIN}/bye"
    out = await browser.post(
        f"https://wiki.{DOMAIN}/.auth/logout",
        {**NAVIGATE, "Origin": f"https://wiki.{DOMAIN}"},
        data={"post_logout_redirect_uri": target},
    )
    assert out.status == 302
    logout = dict(parse_qsl(urlsplit(out.headers["Location"]).query))
    assert logout["post_logout_redirect_uri"] == target
    cleared = out.headers["Set-Cookie"]
    assert cleared.startswith("__Secure-msal-gateway=") and f"Domain={DOMAIN}" in cleared
    # Ended in the store: the old cookie value no longer signs anyone in, on any host.
    assert not [c for c in browser.cookies() if c.key == "__Secure-msal-gateway"]
    again = await browser.get(f"https://grafana.{DOMAIN}/", headers=API)
    assert again.status == 401
