"""Liveness and readiness. Health answers come only from these dedicated paths and never depend
on the User-Agent (THREATS.md HD-11). Readiness may include the application's own answer on
GATEWAY_PROXY__UPSTREAM_READY_PATH (upstream/readiness.py)."""

from __future__ import annotations

from aiohttp import web

from gateway.errors import StoreUnavailable
from gateway.keys import (
    APPLICATION_READINESS,
    DRAINING,
    MSAL,
    STORAGE,
    UPSTREAM_POOL,
    UPSTREAM_PREFIX,
)


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
    application = request.app.get(APPLICATION_READINESS)
    if application is not None:
        checks["application"] = await application.verdict(
            request.app[UPSTREAM_POOL], request.app[UPSTREAM_PREFIX]
        )
    ok = all(value == "ok" for value in checks.values())
    return web.json_response(
        {"status": "ready" if ok else "not ready", "checks": checks}, status=200 if ok else 503
    )
