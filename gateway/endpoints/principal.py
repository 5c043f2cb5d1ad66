"""Who the gateway says the caller is: /.auth/me (Easy Auth's JSON) and /.auth/verify
(forward-auth for nginx auth_request, Traefik ForwardAuth and Envoy ext_authz)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from aiohttp import web

from gateway.auth.headers import assertion_claims, easy_auth_principal, vouched_headers
from gateway.auth.identity import authenticate_session
from gateway.auth.peers import UntrustedForwardAuth, original_request
from gateway.errors import Forbidden, NotFound
from gateway.keys import ACCESS, ASSERTION, SESSIONS, SETTINGS, TRUSTED_PROXIES

log = logging.getLogger(__name__)


async def me(request: web.Request) -> web.StreamResponse:
    """The signed-in principal as Easy Auth returns it; 401 when signed out. Tokens only when
    GATEWAY_TOKENS__EXPOSE_IN_ME is on; never the refresh token."""
    settings = request.app[SETTINGS]
    identity = await authenticate_session(
        request, request.app[SESSIONS], settings.session_cookie_name
    )
    record = identity.record
    claims = easy_auth_principal(record.claims)["claims"]
    entry: dict[str, object] = {
        "provider_name": "aad",
        "user_id": record.claims.get("preferred_username") or record.claims.get("sub"),
        "user_claims": claims,
        "expires_on": datetime.fromtimestamp(record.expires_at, UTC).isoformat(),
    }
    token = record.token(settings.scopes) if settings.scopes else None
    if settings.tokens.expose_in_me:
        entry["id_token"] = record.id_token
        if token is not None:
            entry["access_token"] = token.access_token
            entry["expires_on"] = datetime.fromtimestamp(token.expires_at, UTC).isoformat()
    return web.json_response([entry])


async def verify(request: web.Request) -> web.StreamResponse:
    """Forward-auth: 200 with the identity headers when the original request may pass, 401 when
    the caller must sign in, 403 when a rule refuses them; every failure raises, so an internal
    error is never a 2xx. The decision is the proxy's own (auth/access.py). The original request
    (X-Original-URI / X-Forwarded-Uri and -Method, or Envoy's path) is believed only from a
    trusted proxy; without route rules or per-route tokens it cannot change the answer, and
    "GET /" is judged. In forward-auth mode the answer also carries X-Gateway-Assertion when
    assertions are on."""
    app, settings = request.app, request.app[SETTINGS]
    access = app[ACCESS]
    method, target = "GET", "/"
    if access.depends_on_target:
        try:
            method, target = original_request(request, app[TRUSTED_PROXIES]) or (method, target)
        except UntrustedForwardAuth as exc:
            # Fail closed: judging "/" instead would let rules for other paths be skipped.
            log.error("%s: list the proxy in GATEWAY_PROXY__TRUSTED_PROXIES", exc)
            raise Forbidden("the forward-auth request cannot be trusted") from exc
    decision = await access.decide(request, method, target, identify_public=False)
    response = web.Response(status=200)
    if decision.identity is not None:
        for name, value in vouched_headers(
            decision.identity,
            decision.scopes,
            settings,
            with_token=settings.tokens.expose_in_verify,
            with_token_store=False,
        ):
            response.headers[name] = value
        if settings.forward_auth_only and ASSERTION in app:
            # Only in forward-auth mode: its audience is the applications behind the proxy
            # (GATEWAY_ASSERTION__AUDIENCE, required there). A proxy-mode assertion is for the
            # gateway's own upstream and is never handed to anyone else.
            response.headers["X-Gateway-Assertion"] = app[ASSERTION].sign(
                assertion_claims(decision.identity, multi_tenant=settings.is_multi_tenant),
                subject=decision.identity.user_key,
            )
    return response


async def keys(request: web.Request) -> web.StreamResponse:
    """The public keys that verify X-Gateway-Assertion (JWKS); 404 when assertions are off."""
    if ASSERTION not in request.app:
        raise NotFound("identity assertions are not enabled")
    return web.json_response(
        request.app[ASSERTION].jwks(), headers={"Cache-Control": "public, max-age=3600"}
    )
