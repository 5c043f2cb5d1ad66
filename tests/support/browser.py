"""A scripted browser for end-to-end tests: a cookie-keeping aiohttp client that walks the real
sign-in redirects between the gateway and an identity provider, one hop at a time.

The gateway's public URL in tests is usually https://app.test (TLS would end at an ingress), while
the gateway itself listens on http://127.0.0.1:PORT; the browser maps one onto the other, and
treats that origin as secure so that Secure/__Host- cookies flow as they would over https.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
from aiohttp import ClientResponse, CookieJar
from aiohttp.typedefs import LooseHeaders
from yarl import URL

# What a browser navigating sends, and what an API client sends: the gateway answers one with a
# redirect to sign-in and the other with 401.
NAVIGATE = {"Accept": "text/html,application/xhtml+xml", "Sec-Fetch-Mode": "navigate"}
API = {"Accept": "application/json"}


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.method = "get"
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form" and self.action is None:
            self.action = values.get("action", "")
            self.method = values.get("method", "get").lower()
        elif tag == "input" and values.get("name"):
            self.fields[values["name"]] = values.get("value", "")


def parse_form(html: str) -> tuple[str, str, dict[str, str]]:
    parser = _FormParser()
    parser.feed(html)
    assert parser.action is not None, "no form on the page"
    return parser.action, parser.method, parser.fields


@dataclass
class AuthResponse:
    """What the identity provider hands the browser to deliver to the redirect URI."""

    method: str  # "post" (form_post) or "get" (query)
    url: str  # the redirect URI as the provider named it
    fields: dict[str, str]


class Browser:
    def __init__(self, gateway_url: str, public_url: str, idp_ssl: ssl.SSLContext) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        self.public_url = public_url.rstrip("/")
        self.idp_ssl = idp_ssl
        self.jar = CookieJar(unsafe=True, treat_as_secure_origin=[URL(self.gateway_url)])
        self.session = aiohttp.ClientSession(cookie_jar=self.jar)

    async def close(self) -> None:
        await self.session.close()

    def local(self, url: str) -> str:
        """A gateway URL (public or relative) as the address the test can reach."""
        if url.startswith(self.public_url):
            url = url[len(self.public_url) :]
        if url.startswith("/"):
            return self.gateway_url + url
        return url

    async def get(
        self,
        path: str,
        headers: LooseHeaders | None = None,
        *,
        read: bool = True,
        **kw: Any,
    ) -> ClientResponse:
        """GET without following redirects. The body is read (so the connection goes back to
        the pool) unless `read` is false, when the caller must consume or release it."""
        response = await self.session.get(
            self.local(path), headers=headers or NAVIGATE, allow_redirects=False, **kw
        )
        if read:
            await response.read()
        return response

    async def authorize(self, authorize_url: str, user: str = "alice") -> AuthResponse:
        """Visit the identity provider as `user`; return what it sends back to the gateway."""
        async with self.session.get(
            authorize_url,
            headers={**NAVIGATE, "X-DevIdp-User": user},
            allow_redirects=False,
            ssl=self.idp_ssl,
        ) as response:
            if response.status in (302, 303):
                location = response.headers["Location"]
                parts = urlsplit(location)
                base = location.split("?", 1)[0]
                return AuthResponse("get", base, dict(parse_qsl(parts.query)))
            assert response.status == 200, f"authorize answered {response.status}"
            action, method, fields = parse_form(await response.text())
            return AuthResponse(method, action, fields)

    async def deliver(self, auth: AuthResponse) -> ClientResponse:
        """Deliver the provider's answer to the callback, as the browser would."""
        target = self.local(auth.url)
        if auth.method == "post":
            response = await self.session.post(
                target, data=auth.fields, headers=NAVIGATE, allow_redirects=False
            )
        else:
            response = await self.session.get(
                target, params=auth.fields, headers=NAVIGATE, allow_redirects=False
            )
        await response.read()
        return response

    async def start_sign_in(self, path: str = "/") -> str:
        """Request a protected page and follow the gateway to the provider; return its URL."""
        response = await self.get(path)
        assert response.status == 302, f"expected a redirect to sign-in, got {response.status}"
        login = response.headers["Location"]
        response = await self.get(login)
        assert response.status == 302, f"sign-in start answered {response.status}"
        return response.headers["Location"]

    async def sign_in(self, path: str = "/", user: str = "alice") -> ClientResponse:
        """The whole sign-in; returns the callback's response (a redirect back to `path`)."""
        authorize_url = await self.start_sign_in(path)
        auth = await self.authorize(authorize_url, user)
        return await self.deliver(auth)

    def jar_origin(self) -> URL:
        return URL(self.gateway_url)

    def cookie(self, name: str) -> str | None:
        for cookie in self.jar:
            if cookie.key == name:
                return cookie.value
        return None
