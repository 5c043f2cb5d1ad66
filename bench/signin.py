"""Signing in for real, the way a browser does, to any relying party in front of the development
identity provider: request a protected page, follow the redirects to the provider's authorize
endpoint, pick the test user on its account picker, deliver the answer to the relying party's
callback (a redirect or a self-submitting form_post page), follow it back to the page, and keep
the cookies. Also the one-request checks the harness makes before and after measuring.

A relying party may call itself by a public URL that is not where it listens (the gateway's is
https://app.test, as behind a TLS-terminating ingress); such URLs are mapped onto the local
address, and that origin is treated as secure so `__Host-`/`Secure` cookies flow.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Final
from urllib.parse import urljoin

import aiohttp
from aiohttp import CookieJar
from support.browser import NAVIGATE, parse_form
from yarl import URL

MAX_HOPS: Final = 12
REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


class SignInFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class SignedIn:
    cookie_header: str  # every cookie the relying party set, as one Cookie header value
    page: bytes  # the protected page the sign-in came back to


@dataclass(frozen=True)
class Fetched:
    status: int
    location: str
    body: bytes


async def sign_in(
    *,
    local_url: str,
    public_url: str,
    path: str,
    idp_base_url: str,
    idp_ssl: ssl.SSLContext,
    user: str,
) -> SignedIn:
    local, public = local_url.rstrip("/"), public_url.rstrip("/")

    def reachable(url: str) -> str:
        return local + url[len(public) :] if url.startswith(public) else url

    jar = CookieJar(unsafe=True, treat_as_secure_origin=[URL(local)])
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        url, method, form = local + path, "GET", None
        trail: list[str] = []
        for _ in range(MAX_HOPS):
            target = reachable(url)
            at_idp = target.startswith(idp_base_url)
            trail.append(f"{method} {target.split('?')[0]}")
            async with session.request(
                method,
                target,
                data=form,
                headers=NAVIGATE,
                allow_redirects=False,
                ssl=idp_ssl if at_idp else True,
            ) as response:
                body = await response.read()
                status, location = response.status, response.headers.get("Location", "")
            if status in REDIRECTS:
                url, method, form = urljoin(target, location), "GET", None
                continue
            if status != 200:
                raise SignInFailed(
                    f"{target.split('?')[0]} answered {status} after {' -> '.join(trail)}: "
                    f"{body[:300]!r}"
                )
            text = body.decode(errors="replace")
            if at_idp and 'name="devidp_user"' in text:
                # The account picker: one submit button per test user.
                action, method, fields = parse_form(text)
                url, method, form = urljoin(target, action), method.upper(), fields
                form["devidp_user"] = user
                continue
            if 'id="devidp-form-post"' in text:
                # response_mode=form_post: the page a browser submits to the callback at once.
                action, method, fields = parse_form(text)
                url, method, form = action, method.upper(), fields
                continue
            cookies = jar.filter_cookies(URL(local + "/"))
            header = "; ".join(f"{name}={morsel.value}" for name, morsel in cookies.items())
            if not header:
                raise SignInFailed(f"signed in but no cookie was set: {' -> '.join(trail)}")
            return SignedIn(header, body)
    raise SignInFailed(f"more than {MAX_HOPS} hops: {' -> '.join(trail)}")


async def fetch(url: str, headers: dict[str, str] | None = None) -> Fetched:
    """One GET without redirects, cookies or connection reuse."""
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
        session.get(url, headers=headers or {}, allow_redirects=False) as response,
    ):
        return Fetched(response.status, response.headers.get("Location", ""), await response.read())
