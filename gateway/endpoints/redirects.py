"""Validation of return targets (post_login_redirect_uri, post_logout_redirect_uri).

Only same-origin targets are accepted, and the result is always a path ("/..."): an absolute URL
is accepted only when its scheme, host and port equal the public origin exactly, and only its path,
query and fragment are kept. Anything ambiguous is refused rather than repaired (THREATS.md A1):
browsers strip TAB/CR/LF and treat "\\" as "/", so "/\\t/evil.com" would become "//evil.com".
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote, urlsplit

from gateway.errors import BadRequest

MAX_TARGET_LENGTH: Final = 2048
# In the target as given: no whitespace, controls, backslash or non-ASCII at all.
_UNSAFE_CHARS: Final = re.compile(r"[\x00-\x20\x7f\\]|[^\x00-\x7f]")
# Once percent-decoded: still no controls or backslash (an encoded space or UTF-8 is fine).
_UNSAFE_DECODED: Final = re.compile(r"[\x00-\x1f\x7f\\]")
_DOT_SEGMENT: Final = re.compile(r"/\.\.?(?:/|$)")


class UnsafeRedirect(BadRequest):
    """A return target that is not a plain same-origin path."""

    code = "unsafe_redirect"


def _check_path(path: str) -> str:
    decoded = unquote(path)
    for candidate in (path, decoded):
        if not candidate.startswith("/") or candidate.startswith("//"):
            raise UnsafeRedirect("the return address must be a path on this site")
        if _DOT_SEGMENT.search(candidate):
            raise UnsafeRedirect("the return address must not contain . or .. segments")
    if _UNSAFE_DECODED.search(decoded):
        raise UnsafeRedirect("the return address contains characters that are not allowed")
    if decoded.startswith("/.auth/") or decoded == "/.auth":
        raise UnsafeRedirect("the return address cannot be a sign-in endpoint")
    return path


def safe_return_path(target: str | None, public_origin: str) -> str:
    """The path to send the browser back to: "/" for an empty target, else a same-origin path.

    Raises UnsafeRedirect for anything else: other hosts, userinfo, schemes other than the public
    origin's, scheme-relative or backslash tricks, control or non-ASCII characters.
    """
    if target is None or target == "":
        return "/"
    if len(target) > MAX_TARGET_LENGTH:
        raise UnsafeRedirect("the return address is too long")
    if _UNSAFE_CHARS.search(target):
        raise UnsafeRedirect("the return address contains characters that are not allowed")
    if target.startswith("/"):
        return _check_path(target)
    try:
        parts = urlsplit(target)
    except ValueError as exc:  # e.g. an unbalanced "[" in the host
        raise UnsafeRedirect("the return address is not a valid URL") from exc
    origin = urlsplit(public_origin)
    if (
        parts.scheme.lower() != origin.scheme
        or "@" in parts.netloc
        or parts.netloc.lower() != origin.netloc.lower()
    ):
        raise UnsafeRedirect("the return address must be on this site")
    if parts.netloc != parts.netloc.strip() or parts.hostname is None:
        raise UnsafeRedirect("the return address must be on this site")
    path = parts.path or "/"
    rest = (f"?{parts.query}" if parts.query else "") + (
        f"#{parts.fragment}" if parts.fragment else ""
    )
    return _check_path(path) + rest
