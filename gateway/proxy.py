"""The hot path: every request outside /.auth. Authenticate, renew the token if due, build the
upstream's headers, stream. One store read for a known session; MSAL only through the Refresher,
and only when a token is due."""

from __future__ import annotations

import time

from aiohttp import web
from multidict import CIMultiDict

from gateway import headers as hdrs
from gateway.forward import forward, forward_websocket, is_websocket
from gateway.identity import Identity, authenticate, authenticate_optional, refresh_due
from gateway.keys import (
    IDENTITY,
    REFRESHER,
    REQUEST_ID,
    SESSIONS,
    SETTINGS,
    UPSTREAM,
    UPSTREAM_BASE,
)
from gateway.paths import is_public
from gateway.settings import Settings


async def handle(request: web.Request) -> web.StreamResponse:
    app, settings = request.app, request.app[SETTINGS]
    cookie = settings.session_cookie_name
    identity: Identity | None
    if is_public(request, settings.proxy.public_paths):
        identity = await authenticate_optional(request, app[SESSIONS], cookie)
    else:
        identity = await authenticate(request, app[SESSIONS], cookie)
    if identity is not None:
        if refresh_due(identity.record, settings.scopes, time.time()):
            identity = await app[REFRESHER].refresh(identity)
        request[IDENTITY] = identity
    outbound = upstream_headers(request, identity, settings)
    send = forward_websocket if is_websocket(request) else forward
    return await send(
        request,
        outbound,
        client=app[UPSTREAM],
        base=app[UPSTREAM_BASE],
        own_cookies=settings.own_cookie_names,
    )


def upstream_headers(
    request: web.Request, identity: Identity | None, settings: Settings
) -> CIMultiDict[str]:
    """The client's headers, cleaned, plus forwarding facts and the identity we vouch for."""
    outbound = hdrs.inbound_headers(
        request.headers,
        cookie_names=settings.own_cookie_names,
    )
    client_host = request.headers.get("Host", "")
    if settings.proxy.preserve_host and client_host:
        outbound["Host"] = client_host
    outbound["X-Forwarded-For"] = request.remote or ""
    outbound["X-Forwarded-Proto"] = settings.public_url.scheme
    if client_host:
        outbound["X-Forwarded-Host"] = client_host
    outbound["X-Request-Id"] = request[REQUEST_ID]
    if identity is not None:
        record = identity.record
        outbound.extend(
            hdrs.identity_headers(
                record.claims,
                email_trusted=not settings.is_multi_tenant or record.claims.get("xms_edov") is True,
                access_token=record.access_token or None,
            )
        )
    return outbound
