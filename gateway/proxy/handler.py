"""The hot path: every request outside /.auth. Authenticate, renew the token if due, build the
upstream's headers, stream. One store read for a known session; MSAL only through the Refresher,
and only when a token is due."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiohttp import HttpVersion11, web
from multidict import CIMultiDict

from gateway.auth import headers as hdrs
from gateway.auth.challenges import ClaimsChallenge
from gateway.auth.identity import (
    ApiCallers,
    Identity,
    admit,
    authenticate,
    authenticate_optional,
    email_trusted,
    refresh_due,
)
from gateway.auth.peers import client_address
from gateway.auth.scopes import bearer_scopes
from gateway.config.settings import Settings
from gateway.errors import GatewayError
from gateway.keys import (
    API_CALLERS,
    ASSERTION,
    IDENTITY,
    METRICS,
    OPEN_WEBSOCKETS,
    POLICY,
    REFRESHER,
    REQUEST_ID,
    SESSIONS,
    SETTINGS,
    TIMING,
    TRUSTED_PROXIES,
    UPSTREAM,
    UPSTREAM_BASE,
    UPSTREAM_POOL,
    UPSTREAM_PREFIX,
)
from gateway.proxy.forward import forward, forward_websocket, is_websocket
from gateway.sessions.store import SessionRecord, UpstreamToken
from gateway.telemetry import tracing

log = logging.getLogger(__name__)


async def handle(request: web.Request) -> web.StreamResponse:
    app, settings = request.app, request.app[SETTINGS]
    cookie, api = settings.session_cookie_name, app.get(API_CALLERS)
    rule = app[POLICY].rule_for(request.method, request.raw_path)
    identity: Identity | None
    async with tracing.span(request, "session"):
        if rule is not None and rule.allow == "public":
            identity = await authenticate_optional(request, app[SESSIONS], cookie, api)
        else:
            identity = await authenticate(request, app[SESSIONS], cookie, api)
    if rule is not None and rule.allow != "public":
        assert identity is not None  # authenticate never returns None
        admit(rule, identity, multi_tenant=settings.is_multi_tenant)
    scopes = bearer_scopes(
        request.method, request.rel_url.raw_path, settings.tokens.routes, settings.scopes
    )
    if identity is not None and identity.bearer is not None:
        assert api is not None  # API callers exist only when configured
        return await send_for_api_caller(request, identity, scopes, api)
    if identity is not None and refresh_due(identity.record, scopes, time.time()):
        async with tracing.span(request, "refresh"):
            identity = await app[REFRESHER].refresh(identity, scopes)
    on_challenge = None
    if identity is not None and scopes:
        signed_in = identity

        async def on_challenge(claims: str) -> None:
            # The client will retry; make sure a token with these claims is waiting for it.
            with contextlib.suppress(GatewayError):
                await app[REFRESHER].refresh(signed_in, scopes, claims=claims)

    try:
        return await send_upstream(
            request, upstream_headers(request, identity, scopes, settings), on_challenge
        )
    except ClaimsChallenge as challenge:
        assert identity is not None  # only raised when on_challenge was given
        identity = await app[REFRESHER].refresh(identity, scopes, claims=challenge.claims)
        # Once: a second challenge goes to the client.
        return await send_upstream(request, upstream_headers(request, identity, scopes, settings))


async def send_for_api_caller(
    request: web.Request, identity: Identity, scopes: tuple[str, ...], api: ApiCallers
) -> web.StreamResponse:
    """An API caller's request: no session, no refresh; its own token (or one obtained on its
    behalf) goes upstream only when configured."""
    settings = request.app[SETTINGS]
    token = await api.upstream_token(identity, scopes)
    headers = upstream_headers(request, identity, scopes, settings, api_token=token)
    return await send_upstream(request, headers)


async def send_upstream(
    request: web.Request,
    headers: CIMultiDict[str],
    on_claims_challenge: Callable[[str], Awaitable[None]] | None = None,
) -> web.StreamResponse:
    """Forward the request (a WebSocket is registered for a clean close at shutdown)."""
    app = request.app
    async with tracing.span(request, "upstream"):
        traced = tracing.outbound_traceparent(request)
        if traced is not None:  # the upstream's parent is this span
            headers["traceparent"] = traced
        send: Callable[..., Awaitable[web.StreamResponse]]
        if is_websocket(request):
            send = functools.partial(
                forward_websocket,
                client=app[UPSTREAM],
                base=app[UPSTREAM_BASE],
                open_websockets=app[OPEN_WEBSOCKETS],  # closed properly at shutdown
                open_gauge=app[METRICS].open_websockets,
            )
        else:
            send = functools.partial(forward, pool=app[UPSTREAM_POOL], prefix=app[UPSTREAM_PREFIX])
        return await send(
            request,
            headers,
            own_cookies=app[SETTINGS].own_cookie_names,
            on_claims_challenge=on_claims_challenge,
            timing=request.get(TIMING),
        )


def easy_auth_token_headers(
    record: SessionRecord, token: UpstreamToken | None
) -> list[tuple[str, str]]:
    """App Service's token-store headers, for apps that read them."""
    headers = []
    if record.id_token:
        headers.append(("X-MS-TOKEN-AAD-ID-TOKEN", record.id_token))
    if token is not None:
        expires = datetime.fromtimestamp(token.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        headers.append(("X-MS-TOKEN-AAD-ACCESS-TOKEN", token.access_token))
        headers.append(("X-MS-TOKEN-AAD-EXPIRES-ON", expires))
    return headers


def assertion_claims(record: SessionRecord, settings: Settings) -> dict[str, object]:
    """The identity a signed assertion vouches for (groups as resolved, email only if trusted)."""
    claims: dict[str, object] = {
        name: record.claims[name]
        for name in ("oid", "tid", "sub", "name", "preferred_username", "roles")
        if name in record.claims
    }
    if email_trusted(record.claims, settings.is_multi_tenant) and "email" in record.claims:
        claims["email"] = record.claims["email"]
    groups = record.groups if record.groups is not None else record.claims.get("groups")
    if groups:
        claims["groups"] = list(groups)
    return claims


def identity_headers(
    record: SessionRecord,
    scopes: tuple[str, ...],
    settings: Settings,
    *,
    api_caller_token: str | None = None,
) -> list[tuple[str, str]]:
    """The identity headers the gateway vouches for: a session's, with its token for `scopes`,
    or (with `api_caller_token`) an API caller's, with the token its request carries upstream."""
    token = record.token(scopes) if scopes and api_caller_token is None else None
    vouched = hdrs.identity_headers(
        record.claims,
        email_trusted=email_trusted(record.claims, settings.is_multi_tenant),
        access_token=token.access_token if token else api_caller_token,
        groups=record.groups,
        max_bytes=settings.groups.max_header_bytes,
    )
    if settings.tokens.easy_auth_token_headers:
        vouched.extend(easy_auth_token_headers(record, token))
    return vouched


def upstream_headers(
    request: web.Request,
    identity: Identity | None,
    scopes: tuple[str, ...],
    settings: Settings,
    *,
    api_token: str | None = None,
) -> CIMultiDict[str]:
    """The client's headers, cleaned, plus forwarding facts and the identity we vouch for."""
    outbound = hdrs.inbound_headers(
        request.headers,
        cookie_names=settings.own_cookie_names,
    )
    # The public host, never the client's Host header: an upstream that builds links from Host
    # or X-Forwarded-Host (password resets, caches) cannot be pointed at another site.
    public_host = settings.public_url_host
    if settings.proxy.preserve_host:
        outbound.add("Host", public_host)  # inbound_headers dropped the client's
    # The client's forwarding headers are gone already (inbound_headers): add, never replace.
    outbound.extend(
        (
            ("X-Forwarded-Host", public_host),
            ("X-Forwarded-For", client_address(request, request.app[TRUSTED_PROXIES])),
            ("X-Forwarded-Proto", settings.public_url.scheme),
        )
    )
    outbound["X-Request-Id"] = request[REQUEST_ID]
    outbound["traceparent"] = hdrs.traceparent(request.headers.get("traceparent"))
    if identity is not None:
        request[IDENTITY] = identity
        record = identity.record
        if identity.bearer is None:
            # The same for every request of this record: built once (records are immutable).
            key = ("identity-headers", scopes, id(settings))
            vouched = record.derived.get(key)
            if vouched is None:
                vouched = record.derived[key] = identity_headers(record, scopes, settings)
        else:
            vouched = identity_headers(record, scopes, settings, api_caller_token=api_token)
        outbound.extend(vouched)
        if not vouched or vouched[0][0] != "X-MS-CLIENT-PRINCIPAL":
            # Never expected (the principal is always built); if it happens, operators must see it.
            request.app[METRICS].forwarded_without_identity.inc()
            log.error("signed-in request forwarded without an identity principal")
        if ASSERTION in request.app:
            outbound["X-Gateway-Assertion"] = request.app[ASSERTION].sign(
                assertion_claims(record, settings), subject=record.user_key
            )
    return outbound


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue`: invite the body only from a caller that could be signed in (a
    session cookie or a bearer token) or to a public path; anyone else gets 401 at once and never
    sends the upload. The full check still happens in `handle`."""
    if (
        request.version < HttpVersion11
        or request.headers.get("Expect", "").lower() != "100-continue"
    ):
        return None
    settings, app = request.app[SETTINGS], request.app
    try:
        rule = app[POLICY].rule_for(request.method, request.raw_path)
    except GatewayError as error:  # an ambiguous path: refuse before the body is sent
        return web.json_response({"error": error.code}, status=error.status)
    maybe_known = (
        (rule is not None and rule.allow == "public")
        or settings.session_cookie_name in request.cookies
        or (API_CALLERS in app and "Authorization" in request.headers)
    )
    if not maybe_known:
        return web.json_response({"error": "sign_in_required"}, status=401)
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    return None
