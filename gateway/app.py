"""The composition root: build_app(settings) wires every object, route and middleware.

The only module that constructs collaborators and writes app state. Clients are opened and closed
in cleanup_ctx generators. The store backend is chosen here, once, from GATEWAY_SESSION_STORE.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from aiohttp import ClientSession, ClientTimeout, DummyCookieJar, TCPConnector, WSCloseCode, web
from aiohttp.typedefs import Handler, Middleware
from yarl import URL

from gateway.auth.access import AccessControl
from gateway.auth.headers import fold
from gateway.auth.peers import networks
from gateway.auth.policy import Policy
from gateway.auth.ratelimit import SignInLimits
from gateway.auth.sockets import CHECK_SECONDS_WITHOUT_CACHE, SocketRegistry
from gateway.config.problems import ConfigurationError, Problem, cannot_listen
from gateway.config.rotation import secret_ring
from gateway.config.settings import Settings
from gateway.endpoints import health, oauth2_proxy, principal, signin
from gateway.endpoints.admin_token import AdminToken
from gateway.errors import GatewayError, NotFound, OutsidePrefix
from gateway.keys import (
    ACCESS,
    ADMIN_TOKEN,
    API_CALLERS,
    APPLICATION_READINESS,
    ASSERTION,
    CLIENT_PACE,
    CONFIGURED_HEADER_NAMES,
    DRAINING,
    FLOWS,
    METRICS,
    MSAL,
    OPEN_WEBSOCKETS,
    POLICY,
    REFRESHER,
    SEALER,
    SESSION_INDEX,
    SESSIONS,
    SETTINGS,
    SIGN_IN,
    SIGNIN_LIMITS,
    SLOT_SHARES,
    SOCKETS,
    STATIC_HEADERS,
    STORAGE,
    STRIPPED_PREFIX,
    TOKEN_CACHES,
    TRUSTED_PROXIES,
    UPSTREAM,
    UPSTREAM_BASE,
    UPSTREAM_POOL,
    UPSTREAM_PREFIX,
)
from gateway.oidc.api_callers import ApiCallerAuthenticator
from gateway.oidc.completion import SignInCompleter
from gateway.oidc.msal_client import MsalClient
from gateway.oidc.refresher import SessionRefresher
from gateway.proxy import handler as proxy
from gateway.sessions.cache import SessionCache
from gateway.sessions.ending import end_session
from gateway.sessions.flows import FlowStore
from gateway.sessions.index import SessionIndex
from gateway.sessions.sealing import Sealer
from gateway.sessions.store import SessionRecord, SessionStore
from gateway.sessions.token_cache import TokenCacheStore
from gateway.store.measured import MeasuredStorage
from gateway.store.memory import MemoryStorage
from gateway.telemetry import tracing
from gateway.telemetry.metrics import Metrics
from gateway.tokens import subject
from gateway.tokens.assertion import AssertionSigner
from gateway.upstream.client import UpstreamPool
from gateway.upstream.pacing import Pace
from gateway.upstream.readiness import ApplicationReadiness
from gateway.upstream.shares import SlotShares
from gateway.web.middleware import error_middleware

if TYPE_CHECKING:
    from gateway.store.redis import RedisStorage

log = logging.getLogger(__name__)

METADATA_RETRY_SECONDS: Final = 10.0


def _storage(settings: Settings) -> MemoryStorage | RedisStorage:
    if settings.session_store == "redis":
        # Imported here: redis-py (and what it imports) is 9 MB that a gateway on the memory
        # store never uses.
        from gateway.store.redis import RedisStorage

        # No URL with sentinels: they name the master (Settings requires one or the other).
        url = settings.redis_url.get_secret_value() if settings.redis_url is not None else None
        return RedisStorage(url, settings.redis)
    return MemoryStorage()


def start_up_modules(settings: Settings) -> tuple[str, ...]:
    """The modules that serving `settings` imports at start-up rather than with this one."""
    return ("gateway.store.redis",) if settings.session_store == "redis" else ()


async def _follow_move(
    token_caches: TokenCacheStore,
    index: SessionIndex,
    sessions: SessionStore,
    session_id: str,
    record: SessionRecord,
) -> None:
    """A session record re-sealed with the current cookie secret takes its token cache and its
    revocation entries (its user's names, and the `sid` its id_token names) along, so that
    dropping the previous secret loses none of them."""
    ttl = record.expires_at - time.time()
    await token_caches.adopt(session_id, ttl)
    evicted = await index.add(
        session_id, users=subject.revocation_names(record.claims), sid=record.sid, ttl=ttl
    )
    for old in evicted:
        await end_session(sessions, token_caches, old)


def _store_target(settings: Settings) -> str:
    """Where the store is, and the setting that says so; never a password."""
    if settings.session_store != "redis":
        return "memory"
    if settings.redis.sentinels:
        return f"Redis sentinels {' '.join(settings.redis.sentinels)}, GATEWAY_REDIS__SENTINELS"
    url = urlsplit(settings.redis_url.get_secret_value() if settings.redis_url else "")
    if url.scheme == "unix":
        return f"Redis socket {url.path}, GATEWAY_REDIS_URL"
    return f"Redis at {url.hostname}:{url.port or 6379}, GATEWAY_REDIS_URL"


async def _stores(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    backend = _storage(settings)
    if isinstance(backend, MemoryStorage):
        backend.start_sweeping()
    storage = MeasuredStorage(backend, app[METRICS])
    current, following, previous = secret_ring(settings)
    sealer = Sealer(
        current, next_secret=following, previous=previous, compress=settings.session.compress
    )
    app[STORAGE] = storage
    app[SEALER] = sealer
    # Only Redis has replicas, whose cached copies and open WebSockets need the notice feed; the
    # memory store's one process makes every change itself.
    notices = None if isinstance(backend, MemoryStorage) else backend
    cache: SessionCache[SessionRecord] | None = None
    cache_seconds, idle_ttl = settings.session.cache_seconds, settings.session.idle_ttl_seconds
    if notices is not None and cache_seconds > 0:
        cache = SessionCache(cache_seconds, settings.session.cache_max_entries)
    elif cache_seconds > 0 and not 0 < idle_ttl <= cache_seconds:
        # Reads served by the cache do not slide the idle TTL: an idle TTL this short (settings
        # refuse it beside Redis) leaves the memory store uncached, as it always was.
        cache = SessionCache.for_one_process(cache_seconds, settings.session.cache_max_entries)
    sessions = app[SESSIONS] = SessionStore(
        storage,
        sealer,
        settings.session.idle_ttl_seconds,
        time.time,
        cache=cache,
        notices=notices,
    )
    sockets = app[SOCKETS] = SocketRegistry(
        sessions,
        interval=settings.session.cache_seconds or CHECK_SECONDS_WITHOUT_CACHE,
        max_per_user=settings.proxy.websocket_max_per_user,
        slots=settings.proxy.max_connections,
    )
    sessions.on_change(sockets.changed)  # a sign-out here closes its sockets at once
    tasks = [asyncio.create_task(sockets.run())]
    if notices is not None:
        tasks.append(asyncio.create_task(notices.follow(*_followers(cache, sockets))))
    app[FLOWS] = FlowStore(
        storage,
        sealer,
        settings.signin.flow_ttl_seconds,
        max_per_browser=settings.signin.max_pending_per_browser,
    )
    app[TOKEN_CACHES] = TokenCacheStore(storage, sealer)
    app[SESSION_INDEX] = SessionIndex(storage, sealer)
    if sealer.rotating:
        sessions.on_move(
            functools.partial(_follow_move, app[TOKEN_CACHES], app[SESSION_INDEX], sessions)
        )
    try:
        await storage.ping()
    except GatewayError as exc:
        log.error(
            "the session store (%s) is unreachable at start-up (%s); /.auth/readyz answers 503 "
            "until it is reachable",
            _store_target(settings),
            str(exc.__cause__ or exc).rstrip("."),
        )
    yield
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await sockets.close()
    await storage.close()


def _followers(
    cache: SessionCache[SessionRecord] | None, sockets: SocketRegistry
) -> tuple[Callable[[str], None], Callable[[bool], None]]:
    """What the notice feed tells: the cache drops its copy, open WebSockets re-read their
    session; when the feed comes or goes, both know notices may have been missed."""

    def on_notice(key: str) -> None:
        if cache is not None:
            cache.drop(key)
        sockets.changed(key)

    def on_state(following: bool) -> None:
        if cache is not None:
            cache.feed_changed(following)
        sockets.feed_changed(following)

    return on_notice, on_state


async def _upstream_client(app: web.Application) -> AsyncIterator[None]:
    p = app[SETTINGS].proxy
    base = _upstream_url(app[SETTINGS])
    app[UPSTREAM_POOL] = UpstreamPool(
        base,
        connect_timeout=p.connect_timeout_seconds,
        read_timeout=p.read_timeout_seconds,
        limit=p.max_connections,
        open_gauge=app[METRICS].upstream_connections,
        waits=app[METRICS].upstream_waits,
        slot_wait=p.slot_wait_seconds,
    )
    app[UPSTREAM_PREFIX] = base.raw_path.rstrip("/")
    # WebSockets only: HTTP goes through the pool above.
    app[UPSTREAM] = ClientSession(
        connector=TCPConnector(limit=p.max_connections, limit_per_host=0),
        auto_decompress=False,  # pass bytes through untouched
        cookie_jar=DummyCookieJar(),  # never keep upstream cookies in the gateway
        # Never add headers the client did not send (an Accept-Encoding would get it gzip).
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        timeout=ClientTimeout(
            total=None, sock_connect=p.connect_timeout_seconds, sock_read=p.read_timeout_seconds
        ),
    )
    app[UPSTREAM_BASE] = base
    yield
    await app[UPSTREAM_POOL].close()
    await app[UPSTREAM].close()


async def _keep_loading_metadata(client: MsalClient) -> None:
    while not client.ready:
        try:
            await client.start()
            log.info("identity provider metadata loaded")
        except GatewayError as exc:
            log.error("%s; retrying in %.0fs", exc, METADATA_RETRY_SECONDS)
            await asyncio.sleep(METADATA_RETRY_SECONDS)


async def _msal(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    gauge = app[METRICS].credential_expiry

    def observe_expiry(expiry: dict[str, float]) -> None:
        for kind, ends in expiry.items():
            gauge.labels(kind).set(ends)

    client = MsalClient(settings, observe_expiry=observe_expiry)
    app[MSAL] = client
    msal_timeouts = settings.msal.connect_timeout_seconds + settings.msal.read_timeout_seconds
    app[REFRESHER] = SessionRefresher(
        storage=app[STORAGE],
        sessions=app[SESSIONS],
        token_caches=app[TOKEN_CACHES],
        msal=client,
        # Long enough for one token call with retries; renewed while held anyway.
        lock_ttl=settings.tokens.refresh_lock_seconds or 2 * msal_timeouts + 5,
        # A live holder finishes within its own timeouts (a retried call plus its re-read).
        lock_wait=2 * msal_timeouts + 5,
        clock=time.time,
        metrics=app[METRICS],
        refresh_skew=settings.tokens.refresh_skew_seconds,
    )
    app[SIGN_IN] = SignInCompleter(
        settings=settings,
        msal=client,
        sessions=app[SESSIONS],
        token_caches=app[TOKEN_CACHES],
        index=app[SESSION_INDEX],
    )
    if settings.api.audiences:
        app[API_CALLERS] = ApiCallerAuthenticator(settings, client)
    app[ACCESS] = AccessControl(
        policy=app[POLICY],
        sessions=app[SESSIONS],
        cookie_name=settings.session_cookie_name,
        refresher=app[REFRESHER],
        api_callers=app.get(API_CALLERS),
        token_routes=settings.tokens.routes,
        default_scopes=settings.scopes,
        multi_tenant=settings.is_multi_tenant,
        pass_preflights=settings.proxy.cors_preflight == "pass",
    )
    loader = asyncio.create_task(_keep_loading_metadata(client))
    yield
    loader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await loader
    await client.close()


async def _metrics_listener(app: web.Application) -> AsyncIterator[None]:
    listen = app[SETTINGS].metrics_listen
    if not listen:
        yield
        return
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(app[METRICS].application(), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host.strip("[]"), int(port)).start()
    except OSError as exc:
        await runner.cleanup()
        problem = cannot_listen("GATEWAY_METRICS_LISTEN", host.strip("[]"), int(port), exc)
        raise ConfigurationError([problem]) from None
    yield
    await runner.cleanup()


async def _exporting(tracer: tracing.Tracing, app: web.Application) -> AsyncIterator[None]:
    yield
    await tracer.close()  # the last spans are sent before the process ends


async def _flush_metrics(app: web.Application) -> None:
    """The last requests' metrics, written before the process ends (a worker's are read after)."""
    app[METRICS].flush()


async def _close_websockets(app: web.Application) -> None:
    """Shutdown: end relayed WebSockets with "going away" rather than a dropped connection."""
    sockets: set[web.WebSocketResponse] = app[OPEN_WEBSOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")


def _static_headers(settings: Settings) -> tuple[tuple[str, str], ...]:
    """The operator's fixed headers for the application, file values read now (a trailing newline
    dropped; the values are never logged)."""
    fixed = list(settings.proxy.upstream_headers.items())
    for name, path in settings.proxy.upstream_header_files.items():
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
        if any(ord(char) < 32 or ord(char) == 127 for char in value):
            raise ConfigurationError(
                [
                    Problem(
                        "GATEWAY_PROXY__UPSTREAM_HEADER_FILES",
                        f"{path} (for {name}) holds a control character; a header value cannot",
                    )
                ]
            )
        fixed.append((name, value))
    return tuple(fixed)


def _upstream_url(settings: Settings) -> URL:
    # Settings requires GATEWAY_UPSTREAM in proxy mode, the only mode that asks for it here.
    assert settings.upstream is not None
    return URL(str(settings.upstream))


def _assertion_audience(settings: Settings) -> str:
    """GATEWAY_ASSERTION__AUDIENCE, else the upstream's origin (Settings requires the audience
    in forward-auth mode, where there is no upstream)."""
    if settings.assertion.audience:
        return settings.assertion.audience
    return str(_upstream_url(settings).origin())


def _assertion_signer(settings: Settings) -> AssertionSigner:
    # Without a configured secret (memory store, one replica) a random one serves this process.
    current, following, previous = secret_ring(settings)
    return AssertionSigner(
        current or secrets.token_bytes(32),
        # Verifiers must keep accepting what replicas with another current secret sign.
        also_published=tuple(s for s in (following, *previous) if s is not None),
        issuer=settings.public_origin,
        audience=_assertion_audience(settings),
        lifetime_seconds=settings.assertion.lifetime_seconds,
        rotation_seconds=settings.assertion.rotation_days * 86400,
    )


async def _reserved(request: web.Request) -> web.StreamResponse:
    raise NotFound("there is nothing at this address")


async def _outside_prefix(request: web.Request) -> web.StreamResponse:
    raise OutsidePrefix


async def _not_relayed(request: web.Request) -> web.StreamResponse:
    # GATEWAY_MODE=forward-auth: a request here went around the proxy in front, or the proxy
    # sends the gateway more than /.auth/. Say so plainly; nothing is relayed anywhere.
    raise NotFound(
        "this sign-in gateway only answers forward-auth checks (/.auth/verify) and its own "
        "/.auth/ pages; it relays no requests to an application"
    )


def build_app(settings: Settings, *, serve_metrics: bool = True) -> web.Application:
    """The gateway application. Raises TracingConfigError when tracing is on without its extra."""
    tracer = tracing.tracer_from_settings(settings.log.tracing)
    middlewares: list[Middleware] = [error_middleware]
    if tracer is not None:
        # Outermost, so that the span sees the answer error_middleware rendered.
        public = URL(str(settings.public_url))
        middlewares.insert(
            0,
            tracing.middleware(
                tracer,
                server_address=public.host or "",
                server_port=public.port,
                auth_paths=settings.auth_paths,
            ),
        )

    # Composed into each route's handler once, here, instead of given to aiohttp: its chaining
    # adds two coroutine layers to every request (a wrapper of its own, then each middleware).
    def guarded(handler: Handler) -> Handler:
        for layer in reversed(middlewares):
            handler = functools.partial(layer, handler=handler)
        return handler

    app = web.Application()
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[POLICY] = Policy(
        settings.policy.rules,
        settings.proxy.public_paths,
        case_insensitive=settings.policy.case_insensitive,
    )
    app[TRUSTED_PROXIES] = networks(settings.proxy.trusted_proxies)
    app[DRAINING] = asyncio.Event()
    if settings.proxy.upstream_ready_path is not None:
        app[APPLICATION_READINESS] = ApplicationReadiness(settings.proxy.upstream_ready_path)
    app[SIGNIN_LIMITS] = SignInLimits(
        per_client_per_minute=settings.signin.max_starts_per_minute,
        max_pending=settings.signin.max_pending,
        pending_seconds=settings.signin.flow_ttl_seconds,
        proxies_trusted=bool(settings.proxy.trusted_proxies),
    )
    app[OPEN_WEBSOCKETS] = set()
    proxy_settings = settings.proxy
    app[CLIENT_PACE] = Pace(
        min_rate=proxy_settings.client_min_bytes_per_second,
        grace=proxy_settings.client_timeout_seconds,
        upload_total=proxy_settings.upload_timeout_seconds,
        download_total=proxy_settings.download_timeout_seconds,
    )
    app[STATIC_HEADERS] = _static_headers(settings)
    app[STRIPPED_PREFIX] = settings.path_prefix if settings.proxy.strip_prefix else ""
    app[CONFIGURED_HEADER_NAMES] = frozenset(
        fold(name)
        for name in (*(name for name, _ in app[STATIC_HEADERS]), *settings.proxy.claim_headers)
    )
    app[SLOT_SHARES] = SlotShares(
        proxy_settings.max_connections_per_client or max(1, proxy_settings.max_connections // 2)
    )
    app.on_shutdown.append(_close_websockets)
    app.on_cleanup.append(_flush_metrics)
    if settings.assertion.enabled:
        app[ASSERTION] = _assertion_signer(settings)
    if settings.admin.enabled:
        app[ADMIN_TOKEN] = AdminToken(settings.admin)
    if tracer is not None:
        app.cleanup_ctx.append(functools.partial(_exporting, tracer))
    relays = not settings.forward_auth_only
    app.cleanup_ctx.extend([_stores, _upstream_client, _msal] if relays else [_stores, _msal])
    if serve_metrics:
        app.cleanup_ctx.append(_metrics_listener)
    router = app.router
    # Everything the gateway answers lives under the public URL's path prefix ("" at the root).
    at = settings.auth_path
    router.add_get(at("/.auth/healthz"), guarded(health.live), allow_head=True)
    router.add_get(at("/.auth/readyz"), guarded(health.ready), allow_head=True)
    router.add_get(at("/.auth/login/aad"), guarded(signin.start))
    router.add_get(at("/.auth/login/aad/callback"), guarded(signin.finish))  # response_mode=query
    router.add_post(at("/.auth/login/aad/callback"), guarded(signin.finish))  # form_post
    for method in ("GET", "POST"):
        router.add_route(method, at("/.auth/logout"), guarded(signin.sign_out))
        router.add_route(method, at("/.auth/refresh"), guarded(signin.refresh))
        router.add_route(
            method, at("/.auth/logout/frontchannel"), guarded(signin.front_channel_logout)
        )
    router.add_get(at("/.auth/logout/complete"), guarded(signin.signed_out))
    router.add_post(at("/.auth/admin/revoke"), guarded(signin.revoke))
    router.add_get(at("/.auth/me"), guarded(principal.me))
    router.add_get(at("/.auth/verify"), guarded(principal.verify))
    router.add_route("*", at("/.auth/verify/{tail:.*}"), guarded(principal.verify))  # Envoy
    router.add_get(at("/.auth/keys"), guarded(principal.keys))
    if settings.proxy.oauth2_proxy_paths:
        for method, path, handler in oauth2_proxy.ROUTES:
            router.add_route(method, at(path), guarded(handler))
    router.add_route("*", at("/.auth/{tail:.*}"), guarded(_reserved))  # never proxied
    router.add_route("*", at("/.auth"), guarded(_reserved))
    if relays:
        application = guarded(proxy.handle)
        expect = proxy.expect_continue
    else:
        application, expect = guarded(_not_relayed), None
    if settings.path_prefix:
        # Probes reach a pod without the ingress's path: liveness and readiness answer at the
        # root too. Nothing else outside the prefix is this gateway's or its application's.
        router.add_get("/.auth/healthz", guarded(health.live), allow_head=True)
        router.add_get("/.auth/readyz", guarded(health.ready), allow_head=True)
        router.add_route("*", settings.path_prefix, application, expect_handler=expect)
        router.add_route("*", at("/{tail:.*}"), application, expect_handler=expect)
        router.add_route("*", "/{tail:.*}", guarded(_outside_prefix))
    else:
        router.add_route("*", "/{tail:.*}", application, expect_handler=expect)
    return app
