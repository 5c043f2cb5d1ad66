"""Liveness and readiness. Health answers come only from these dedicated paths and never depend
on the User-Agent (THREATS.md HD-11). Readiness may include the application's own answer on
GATEWAY_PROXY__UPSTREAM_READY_PATH, asked at most every APPLICATION_CHECK_SECONDS."""

from __future__ import annotations

import time
from typing import Final

from aiohttp import web
from multidict import CIMultiDict

from gateway.errors import StoreUnavailable, UpstreamBusy, UpstreamTimeout, UpstreamUnavailable
from gateway.keys import (
    APPLICATION_READY,
    DRAINING,
    MSAL,
    SETTINGS,
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
    path = request.app[SETTINGS].proxy.upstream_ready_path
    if path is not None:
        checks["application"] = await _application_ready(request.app, path)
    ok = all(value == "ok" for value in checks.values())
    return web.json_response(
        {"status": "ready" if ok else "not ready", "checks": checks}, status=200 if ok else 503
    )


APPLICATION_CHECK_SECONDS: Final = 2.0


async def _application_ready(app: web.Application, path: str) -> str:
    """ "ok" when the application answered `path` with 2xx/3xx, recently (cached, so probes from
    many kubelets or load balancers cost the application one request every 2 s)."""
    cached = app[APPLICATION_READY]
    now = time.monotonic()
    if cached and now - cached[0] < APPLICATION_CHECK_SECONDS:
        return str(cached[1])
    try:
        response = await app[UPSTREAM_POOL].send(
            "GET", app[UPSTREAM_PREFIX] + path, CIMultiDict({"User-Agent": "msal-gateway"}), None
        )
        async with response:
            await response.read()
            verdict = "ok" if 200 <= response.status < 400 else f"answered {response.status}"
    except (UpstreamUnavailable, UpstreamTimeout, UpstreamBusy):
        verdict = "unreachable"
    cached[:] = [now, verdict]
    return verdict
