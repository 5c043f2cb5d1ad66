"""Validation of return targets (post_login_redirect_uri, post_logout_redirect_uri).

Same-origin targets are accepted, and the result is a path ("/..."): an absolute URL is accepted
only when its scheme, host and port equal the public origin exactly, and only its path, query and
fragment are kept. Under a path prefix the path must stay inside it. With a shared cookie domain,
an https URL on one of the configured return hosts is accepted too, and kept absolute. Anything
ambiguous is refused rather than repaired (THREATS.md A1): browsers strip TAB/CR/LF and treat
"\\" as "/", so "/\\t/evil.com" would become "//evil.com".
"""

from __future__ import annotations

import re
from collections.abc import Callable
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


def _check_path(path: str, prefix: str = "") -> str:
    decoded = unquote(path)
    for candidate in (path, decoded):
        if not candidate.startswith("/") or candidate.startswith("//"):
            raise UnsafeRedirect("the return address must be a path on this site")
        if _DOT_SEGMENT.search(candidate):
            raise UnsafeRedirect("the return address must not contain . or .. segments")
        # Literally inside the prefix, before and after decoding: "/payroll%2F../x" and
        # "/payrollx" are not under /payroll; "/payroll?tab=2" is (the path is the prefix).
        within = re.split(r"[?#]", candidate, maxsplit=1)[0]
        if prefix and not (within == prefix or within.startswith(prefix + "/")):
            raise UnsafeRedirect("the return address must be inside this application's path")
    if _UNSAFE_DECODED.search(decoded):
        raise UnsafeRedirect("the return address contains characters that are not allowed")
    reserved = decoded.removeprefix(prefix)
    if reserved.startswith("/.auth/") or reserved == "/.auth":
        raise UnsafeRedirect("the return address cannot be a sign-in endpoint")
    return path


def safe_return_path(
    target: str | None,
    public_origin: str,
    *,
    prefix: str = "",
    other_host: Callable[[str], bool] | None = None,
) -> str:
    """Where to send the browser back to: the application's start (prefix + "/") for an empty
    target, else a same-origin path inside the prefix, or, when `other_host` accepts the URL's
    host[:port], an absolute https URL on that host.

    Raises UnsafeRedirect for anything else: other hosts, userinfo, schemes other than the public
    origin's, scheme-relative or backslash tricks, control or non-ASCII characters.
    """
    if target is None or target == "":
        return prefix + "/"
    if len(target) > MAX_TARGET_LENGTH:
        raise UnsafeRedirect("the return address is too long")
    if _UNSAFE_CHARS.search(target):
        raise UnsafeRedirect("the return address contains characters that are not allowed")
    if target.startswith("/"):
        return _check_path(target, prefix)
    try:
        parts = urlsplit(target)
    except ValueError as exc:  # e.g. an unbalanced "[" in the host
        raise UnsafeRedirect("the return address is not a valid URL") from exc
    if "@" in parts.netloc or parts.netloc != parts.netloc.strip() or parts.hostname is None:
        raise UnsafeRedirect("the return address must be on this site")
    origin = urlsplit(public_origin)
    netloc = parts.netloc.lower()
    rest = (f"?{parts.query}" if parts.query else "") + (
        f"#{parts.fragment}" if parts.fragment else ""
    )
    if parts.scheme.lower() == origin.scheme and netloc == origin.netloc.lower():
        return _check_path(parts.path or "/", prefix) + rest
    if other_host is not None and parts.scheme == "https" and other_host(netloc):
        return f"https://{netloc}{_check_path(parts.path or '/')}{rest}"
    raise UnsafeRedirect("the return address must be on this site")


def absolute_target(target: str, public_origin: str) -> str:
    """A checked return target as an absolute URL (what an identity provider must be given)."""
    return target if target.startswith("https://") else public_origin + target
