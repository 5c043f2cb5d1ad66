"""Liveness and readiness. Health answers come only from these dedicated paths and never depend
on the User-Agent (THREATS.md HD-11)."""

from __future__ import annotations

from aiohttp import web

from gateway.errors import StoreUnavailable
from gateway.keys import DRAINING, MSAL, STORAGE


async def live(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.StreamResponse:
    """200 when the session store answers and the identity provider's metadata is loaded."""
    checks: dict[str, str] = {}
    if request.app[DRAINING].is_set():
        checks["server"] = "shutting down"
    try:
        await request.app[STORAGE].ping()
        checks["store"] = "ok"
    except StoreUnavailable:
        checks["store"] = "unreachable"
    checks["identity_provider"] = "ok" if request.app[MSAL].ready else "metadata not loaded"
    ok = all(value == "ok" for value in checks.values())
    return web.json_response(
        {"status": "ready" if ok else "not ready", "checks": checks}, status=200 if ok else 503
    )
