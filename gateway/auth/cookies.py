"""The gateway's cookies: minting opaque ids, reading them, their Set-Cookie attributes, and hiding
them from the upstream. Pure functions; what a cookie points to is the stores' business.

One parser for reading and for scrubbing (THREATS CK-07, CK-09). A Cookie header is split on ";"
only (RFC 6265 4.2.1): a comma never starts a cookie. But older parsers (RFC 2965) and some
frameworks do split on commas, so a cookie tossed from a sibling host as `x=1, <our name>=<id>`
is one cookie named x to us and our cookie to them. Such a hidden mention of one of our names is
ambiguity, and ambiguity reads as absent: the gateway never believes it, and the application
never receives it.

The session cookie holds only a random id. The sign-in cookie binds a pending sign-in to the
browser that started it; with form_post the callback is a cross-site POST, so that cookie must be
SameSite=None (which browsers accept only with Secure, i.e. an https public URL).
"""

from __future__ import annotations

import re
import secrets
from typing import Final, Literal

from aiohttp import web

from gateway.config.settings import CookieSpec

SESSION_ID_BYTES: Final = 32
_ID_SHAPE: Final = re.compile(r"^[A-Za-z0-9_-]{32,64}$")


def mint_id() -> str:
    """A fresh unguessable identifier (256 bits) for a session or a sign-in binding."""
    return secrets.token_urlsafe(SESSION_ID_BYTES)


def mentioned_names(pair: str) -> list[str]:
    """Every cookie name a lenient parser could find in one `;`-separated part of a Cookie
    header (or in the name=value part of a Set-Cookie): the part's own name, and the name of each
    comma-separated segment after it."""
    return [segment.partition("=")[0].strip() for segment in pair.split(",")]


def read_id(request: web.Request, name: str) -> str | None:
    """The cookie's value if it has the shape of an id we mint; anything else reads as absent.

    A name sent more than once (a cookie planted from a sibling site, or two Cookie headers), or
    hidden after a comma in another cookie, reads as absent too: which copy a parser keeps is
    not something an attacker may decide."""
    mentions = 0
    value: str | None = None
    for header in request.headers.getall("Cookie", []):
        for pair in header.split(";"):
            mentions += mentioned_names(pair).count(name)
            own_name, _, own_value = pair.partition("=")
            if own_name.strip() == name:
                value = own_value.strip()
    if mentions != 1 or value is None or not _ID_SHAPE.match(value):
        return None
    return value


def without_named_cookies(cookie_header: str, names: frozenset[str]) -> str:
    """The Cookie header without any part that names one of `names`, however it is parsed."""
    kept = [
        pair
        for pair in cookie_header.split(";")
        if pair.strip() and names.isdisjoint(mentioned_names(pair))
    ]
    return ";".join(kept).strip()


def sets_named_cookie(set_cookie_value: str, names: frozenset[str]) -> bool:
    """Whether a Set-Cookie value could set one of `names` for some parser: its cookie-pair
    names one, or hides one after a comma (which the browser stores inside another cookie's
    value and sends back as `x=1, <name>=...`)."""
    pair = set_cookie_value.split(";", 1)[0]
    return not names.isdisjoint(mentioned_names(pair))


def set_cookie(
    response: web.StreamResponse,
    cookie: CookieSpec,
    value: str,
    *,
    max_age: int,
    same_site: Literal["Lax", "None", "Strict"] = "Lax",
) -> None:
    response.set_cookie(
        cookie.name,
        value,
        max_age=max_age,
        path=cookie.path,
        domain=cookie.domain,
        secure=cookie.secure,
        httponly=True,
        samesite=same_site,
    )


def clear_cookie(response: web.StreamResponse, cookie: CookieSpec) -> None:
    # Same Path and Domain as when set: a browser keeps a cookie per (name, domain, path).
    set_cookie(response, cookie, "", max_age=0)
