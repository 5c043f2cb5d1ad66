"""The hot path: every request outside /.auth. Decide (auth/access.py: who, may they, which
token, renewed if due), build the upstream's headers, stream. One store read for a known session;
MSAL only through the Refresher, and only when a token is due."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable

from aiohttp import HttpVersion11, web
from multidict import CIMultiDict

from gateway.auth import headers as hdrs
from gateway.auth.challenges import ClaimsChallenge, challenge_inspector
from gateway.auth.cookies import read_id
from gateway.auth.identity import ApiCallerIdentity, Identity, SessionIdentity
from gateway.config.settings import Settings
from gateway.errors import GatewayError, OutsidePrefix
from gateway.keys import (
    ACCESS,
    API_CALLERS,
    ASSERTION,
    CLIENT_ADDRESS,
    CLIENT_PACE,
    CONFIGURED_HEADER_NAMES,
    METRICS,
    OPEN_WEBSOCKETS,
    POLICY,
    REFRESHER,
    REQUEST_ID,
    SETTINGS,
    SLOT_SHARES,
    SOCKETS,
    STATIC_HEADERS,
    STRIPPED_PREFIX,
    TIMING,
    UPSTREAM,
    UPSTREAM_BASE,
    UPSTREAM_POOL,
    UPSTREAM_PREFIX,
)
from gateway.proxy.forward import HeadInspector, forward
from gateway.proxy.websocket import forward_websocket, is_websocket
from gateway.telemetry import tracing

log = logging.getLogger(__name__)


async def handle(request: web.Request) -> web.StreamResponse:
    app, settings = request.app, request.app[SETTINGS]
    prefix = settings.path_prefix
    raw = request.rel_url.raw_path
    if prefix and not (raw == prefix or raw.startswith(prefix + "/")):
        # Routed here on the decoded path ("/pay%72oll/x"), but not what a browser sends for
        # the prefix: refused, so that the prefix the application sees is never in doubt.
        raise OutsidePrefix
    decision = await app[ACCESS].decide(
        request, request.method, request.raw_path, identify_public=True
    )
    identity, scopes = decision.identity, decision.scopes
    del decision
    if isinstance(identity, ApiCallerIdentity):
        return await send_for_api_caller(request, identity, scopes)
    if is_websocket(request):
        # A WebSocket may stay open for hours: while it does, its frames hold nothing of its
        # session but the lease (a decoded record is about 13 KB, and the session cache may have
        # let it go long ago). The coroutine takes the identity over; this frame lets go first.
        sending = send_upstream(
            request,
            upstream_headers(request, identity, scopes, settings),
            identity,
            websocket=True,
        )
        del identity
        return await sending
    inspect = None
    if identity is not None and scopes:
        signed_in = identity

        async def on_challenge(claims: str) -> None:
            # The client will retry; make sure a token with these claims is waiting for it.
            with contextlib.suppress(GatewayError):
                await app[REFRESHER].refresh(signed_in, scopes, claims=claims)

        inspect = challenge_inspector(request.method, request.body_exists, on_challenge)
    try:
        return await send_upstream(
            request,
            upstream_headers(request, identity, scopes, settings),
            identity,
            inspect,
            websocket=False,
        )
    except ClaimsChallenge as challenge:
        assert identity is not None  # only raised when inspect was given
        identity = await app[REFRESHER].refresh(identity, scopes, claims=challenge.claims)
        # Once: a second challenge goes to the client.
        return await send_upstream(
            request,
            upstream_headers(request, identity, scopes, settings),
            identity,
            websocket=False,
        )


async def send_for_api_caller(
    request: web.Request, identity: ApiCallerIdentity, scopes: tuple[str, ...]
) -> web.StreamResponse:
    """An API caller's request: no session, no refresh; its own token (or one obtained on its
    behalf) goes upstream only when configured."""
    token = await request.app[API_CALLERS].upstream_token(identity, scopes)
    headers = upstream_headers(request, identity, scopes, request.app[SETTINGS], api_token=token)
    return await send_upstream(request, headers, identity, websocket=is_websocket(request))


async def send_upstream(
    request: web.Request,
    headers: CIMultiDict[str],
    identity: Identity | None,
    inspect_head: HeadInspector | None = None,
    *,
    websocket: bool,
) -> web.StreamResponse:
    """Forward the request. A WebSocket holds a lease while it runs (auth/sockets.py: closed when
    its session ends, counted against its user's cap) and is registered for a clean close at
    shutdown. Either holds one of its client's shares of the upstream connections (the signed-in
    user or API caller, else the address) while it runs."""
    app = request.app
    client = identity.user_key if identity is not None else request[CLIENT_ADDRESS]
    app[SLOT_SHARES].take(client)  # before anything else is opened for the request
    try:
        async with tracing.span(request, "upstream"):
            traced = tracing.outbound_traceparent(request)
            if traced is not None:  # the upstream's parent is this span
                headers["traceparent"] = traced
            send: Callable[..., Awaitable[web.StreamResponse]]
            lease = None
            if websocket:
                lease = app[SOCKETS].open(identity)  # 429 or 503 here, before the upgrade
                identity = None  # not held while the socket is open (handle)
                send = functools.partial(
                    forward_websocket,
                    client=app[UPSTREAM],
                    base=app[UPSTREAM_BASE],
                    strip=app[STRIPPED_PREFIX],
                    limits=app[SETTINGS].proxy,
                    lease=lease,
                    open_websockets=app[OPEN_WEBSOCKETS],  # closed properly at shutdown
                    open_gauge=app[METRICS].open_websockets,
                )
            else:
                send = functools.partial(
                    forward,
                    pool=app[UPSTREAM_POOL],
                    prefix=app[UPSTREAM_PREFIX],
                    strip=app[STRIPPED_PREFIX],
                    pace=app[CLIENT_PACE],
                )
            with lease or contextlib.nullcontext():
                return await send(
                    request,
                    headers,
                    own_cookies=app[SETTINGS].own_cookie_names,
                    inspect_head=inspect_head,
                    timing=request.get(TIMING),
                )
    finally:
        app[SLOT_SHARES].give_back(client)


def upstream_headers(
    request: web.Request,
    identity: Identity | None,
    scopes: tuple[str, ...],
    settings: Settings,
    *,
    api_token: str | None = None,
) -> CIMultiDict[str]:
    """The client's headers, cleaned, plus forwarding facts and the identity we vouch for."""
    # Names the operator configured (fixed and claim headers) are dropped with the client's other
    # copies of what the gateway states: in any spelling, they never reach the application.
    outbound = hdrs.inbound_headers(
        request.headers,
        cookie_names=settings.own_cookie_names,
        also_drop=request.app[CONFIGURED_HEADER_NAMES],
    )
    outbound.extend(request.app[STATIC_HEADERS])
    # The public host, never the client's Host header: an upstream that builds links from Host
    # or X-Forwarded-Host (password resets, caches) cannot be pointed at another site.
    # A sibling host under the shared cookie domain (one of the return hosts) is named as itself.
    public_host = settings.sibling_host(request.headers.get("Host", "")) or settings.public_url_host
    if settings.proxy.preserve_host:
        outbound.add("Host", public_host)  # inbound_headers dropped the client's
    # The client's forwarding headers are gone already (inbound_headers): add, never replace.
    outbound.extend(
        (
            ("X-Forwarded-Host", public_host),
            ("X-Forwarded-For", request[CLIENT_ADDRESS]),
            ("X-Forwarded-Proto", settings.public_url.scheme),
        )
    )
    if settings.proxy.strip_prefix:
        outbound.add("X-Forwarded-Prefix", settings.path_prefix)
    outbound["X-Request-Id"] = request[REQUEST_ID]
    outbound["traceparent"] = hdrs.traceparent(request.headers.get("traceparent"))
    if identity is not None:
        if isinstance(identity, SessionIdentity):
            # The same for every request of this record: built once (records are immutable).
            record = identity.record
            key = ("identity-headers", scopes, id(settings))
            vouched = record.derived.get(key)
            if vouched is None:
                vouched = record.derived[key] = hdrs.vouched_headers(
                    identity, scopes, settings, with_token=True, with_token_store=True
                )
        else:
            vouched = hdrs.vouched_headers(
                identity,
                scopes,
                settings,
                with_token=True,
                with_token_store=True,
                api_caller_token=api_token,
            )
        outbound.extend(vouched)
        if not vouched or vouched[0][0] != "X-MS-CLIENT-PRINCIPAL":
            # Never expected (the principal is always built); if it happens, operators must see it.
            request.app[METRICS].forwarded_without_identity.inc()
            log.error("signed-in request forwarded without an identity principal")
        if ASSERTION in request.app:
            outbound["X-Gateway-Assertion"] = request.app[ASSERTION].sign(
                hdrs.assertion_claims(identity, multi_tenant=settings.is_multi_tenant),
                subject=identity.user_key,
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
        or read_id(request, settings.session_cookie_name) is not None
        or (API_CALLERS in app and "Authorization" in request.headers)
    )
    if not maybe_known:
        return web.json_response({"error": "sign_in_required"}, status=401)
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    return None
