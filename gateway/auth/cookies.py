"""The gateway's cookies: minting opaque ids, their Set-Cookie attributes, and hiding them from the
upstream. Pure functions; what a cookie points to is the stores' business.

The session cookie holds only a random id. The sign-in cookie binds a pending sign-in to the
browser that started it; with form_post the callback is a cross-site POST, so that cookie must be
SameSite=None (which browsers accept only with Secure, i.e. an https public URL).
"""

from __future__ import annotations

import re
import secrets
from typing import Final, Literal

from aiohttp import web

SESSION_ID_BYTES: Final = 32
_ID_SHAPE: Final = re.compile(r"^[A-Za-z0-9_-]{32,64}$")


def mint_id() -> str:
    """A fresh unguessable identifier (256 bits) for a session or a sign-in binding."""
    return secrets.token_urlsafe(SESSION_ID_BYTES)


def read_id(request: web.Request, name: str) -> str | None:
    """The cookie's value if it has the shape of an id we mint; anything else reads as absent.

    A name sent more than once (a cookie planted from a sibling site, or two Cookie headers)
    reads as absent too: which copy a parser keeps is not something an attacker may decide."""
    seen = [
        part.split("=", 1)[1].strip() if "=" in part else ""
        for header in request.headers.getall("Cookie", [])
        for part in header.replace(",", ";").split(";")
        if part.split("=", 1)[0].strip() == name
    ]
    if len(seen) != 1 or not _ID_SHAPE.match(seen[0]):
        return None
    return seen[0]


def set_cookie(
    response: web.StreamResponse,
    name: str,
    value: str,
    *,
    secure: bool,
    max_age: int,
    same_site: Literal["Lax", "None", "Strict"] = "Lax",
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",  # required by the __Host- prefix
        secure=secure,
        httponly=True,
        samesite=same_site,
    )


def clear_cookie(response: web.StreamResponse, name: str, *, secure: bool) -> None:
    response.set_cookie(name, "", max_age=0, path="/", secure=secure, httponly=True, samesite="Lax")
