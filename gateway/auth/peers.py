"""Which peers are trusted proxies, and what the request looks like from behind them.

Forwarding headers (X-Forwarded-For, and the forward-auth headers that name the original request)
are believed only when the TCP peer is a configured proxy. The client address is the right-most
address in X-Forwarded-For that is not a trusted proxy (THREATS.md HD-09). Pure functions.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_ORIGINAL_TARGET: Final = ("X-Original-URI", "X-Forwarded-Uri")
_ORIGINAL_METHOD: Final = ("X-Original-Method", "X-Forwarded-Method")
ENVOY_VERIFY_PREFIX: Final = "/.auth/verify"  # Envoy's path_prefix; the original path follows


def networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def _trusted(address: str | None, trusted: tuple[Network, ...]) -> bool:
    if not address or not trusted:
        return False
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def peer_is_trusted(request: web.Request, trusted: tuple[Network, ...]) -> bool:
    return _trusted(request.remote, trusted)


def client_address(request: web.Request, trusted: tuple[Network, ...]) -> str:
    """The right-most untrusted hop: what a trusted proxy saw, never what the client claims."""
    address = request.remote or ""
    if not _trusted(address, trusted):
        return address
    hops = [
        hop.strip()
        for value in request.headers.getall("X-Forwarded-For", [])
        for hop in value.split(",")
    ]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return hop
    return address


def target_of_url(url: str) -> str | None:
    """The raw path and query of ingress-nginx's X-Original-URL ($scheme://$http_host
    $request_uri), byte for byte: never decoded, so it is judged exactly as X-Original-URI would
    be. None when it names no target unambiguously.

    The target starts at the first "/" after "://": $request_uri always starts with one, and
    nginx refuses a "/" in the Host header, while it passes "?" or "#" there as part of a port
    it never checks ("Host: app.test:?x" gives "http://app.test:?x/readers/x", whose path is
    /readers/x, not the root with a query)."""
    if url.startswith("/"):
        return url
    scheme, separator, rest = url.partition("://")
    slash = rest.find("/")
    if not separator or scheme.lower() not in ("http", "https") or slash == -1:
        return None
    return rest[slash:]


class UntrustedForwardAuth(Exception):
    """A forward-auth request names an original request, but not from a trusted proxy, or in two
    different ways: nothing it says about the original request can be believed."""


def original_request(
    request: web.Request, trusted: tuple[Network, ...], *, path_prefix: str = ""
) -> tuple[str, str] | None:
    """(method, raw target) of the request a forward-auth proxy asks about; None when it names
    none. Raises UntrustedForwardAuth when it does but cannot be believed. `path_prefix` is the
    public URL's, under which Envoy's verify path lives."""
    targets = {request.headers[h] for h in _ORIGINAL_TARGET if h in request.headers}
    ingress_url = request.headers.get("X-Original-URL")
    if ingress_url is not None:
        ingress_target = target_of_url(ingress_url)
        if ingress_target is None:
            raise UntrustedForwardAuth("the forward-auth request's X-Original-URL has no path")
        targets.add(ingress_target)
    tail = request.match_info.get("tail")
    if tail is not None:  # Envoy ext_authz: /.auth/verify + the original path, original method
        # The raw bytes after the prefix, never the route's percent-decoded tail: "%3F" must not
        # become a "?" that hides the rest of the path from the rule (the app gets it raw).
        targets.add(request.raw_path.removeprefix(path_prefix + ENVOY_VERIFY_PREFIX))
    if not targets:
        return None
    if not peer_is_trusted(request, trusted):
        raise UntrustedForwardAuth("the forward-auth caller is not a trusted proxy")
    if len(targets) > 1:
        raise UntrustedForwardAuth("the forward-auth request names two different originals")
    if tail is not None:
        return request.method, targets.pop()
    method = next((request.headers[h] for h in _ORIGINAL_METHOD if h in request.headers), "GET")
    return method.upper(), targets.pop()
