"""Which request paths are public (served without sign-in).

Matching is deliberately conservative: a request whose raw path is ambiguous (encoded "/" or "\\",
dot segments, NUL, ";" path parameters) is never public, because the upstream may normalise it
into a protected path.
"""

from __future__ import annotations

import re
from typing import Final

from aiohttp import web

# ";" too: servlet containers strip ";params" from segments, so "/public/..;/admin" is "/admin".
_AMBIGUOUS: Final = re.compile(r"%2f|%5c|%2e|%00|%3b|;|\\|/\.\.?(?:/|$)", re.IGNORECASE)


def matches(path: str, prefix: str) -> bool:
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


def is_public(request: web.Request, prefixes: tuple[str, ...]) -> bool:
    if not prefixes:
        return False
    raw_path = request.rel_url.raw_path
    if _AMBIGUOUS.search(raw_path):
        return False
    return any(matches(raw_path, prefix) for prefix in prefixes)
