"""Which bearer token a request carries: per-route scopes (first matching rule), else the default
GATEWAY_SCOPES. Pure functions."""

from __future__ import annotations

from gateway.auth.paths import matches
from gateway.config.access import TokenRoute


def bearer_scopes(
    method: str, raw_path: str, routes: tuple[TokenRoute, ...], default: tuple[str, ...]
) -> tuple[str, ...]:
    for route in routes:
        if matches(raw_path, route.path) and (not route.methods or method in route.methods):
            return route.scopes
    return default


def scope_sets(routes: tuple[TokenRoute, ...], default: tuple[str, ...]) -> frozenset[str]:
    """Every configured set of scopes, as space-joined strings (what sign-in may ask for)."""
    return frozenset({" ".join(default), *(" ".join(route.scopes) for route in routes)}) - {""}
