"""Running the gateway's HTTP server, and stopping it gently.

On SIGTERM (Kubernetes' "please stop"): /.auth/readyz turns 503 at once while the listener keeps
accepting for GATEWAY_PROXY__DRAIN_SECONDS, so the load balancer stops sending traffic without a
single refused connection; then the listener closes and requests in flight, streams included, get
up to GATEWAY_PROXY__SHUTDOWN_GRACE_SECONDS to finish; open WebSockets are closed with 1001.
Client connections are bounded (request-head deadline, idle keep-alive, a cap) by
server/connections.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import signal
from collections.abc import Callable
from typing import Final

from aiohttp import web

from gateway.app import build_app, start_up_modules
from gateway.config.problems import ConfigurationError, Problem, cannot_listen
from gateway.config.settings import Settings
from gateway.keys import DRAINING, METRICS, MSAL
from gateway.server.connections import (
    BoundedAppRunner,
    ClientConnections,
    client_connection_limit,
    raise_open_file_limit,
)
from gateway.telemetry import access_log, build_info, logs

log = logging.getLogger(__name__)
GC_THRESHOLDS: Final = (50_000, 20, 100)

# Connections the kernel completes before the gateway accepts them. aiohttp's 128 overflows when a
# burst arrives (a flood, or many browsers reconnecting after a restart), and an overflowed SYN is
# dropped: that client waits a full one-second retransmission. The kernel caps it at somaxconn.
LISTEN_BACKLOG: Final = 1024
# A worker joins the shared port once it has the identity provider's metadata, or after this long
# (the provider may be down: signed-in users must still be served).
WORKER_METADATA_WAIT_SECONDS: Final = 5.0


async def _serve(settings: Settings, worker: bool) -> None:
    # A worker's supervisor serves the metrics listener for all of them (server/workers.py).
    app = build_app(settings, serve_metrics=not worker)
    proxy = settings.proxy
    limit = client_connection_limit(
        proxy.max_client_connections,
        raise_open_file_limit(),
        reserved=proxy.max_connections + settings.redis.max_connections,
    )
    runner = BoundedAppRunner(
        app,
        handle_signals=False,
        access_log_class=access_log.AccessLogger,
        access_log=logging.getLogger("gateway.access") if settings.log.access_log else None,
        shutdown_timeout=proxy.shutdown_grace_seconds,
        keepalive_timeout=proxy.keepalive_timeout_seconds,
        connections=ClientConnections(limit, app[METRICS]),
        header_timeout=proxy.header_timeout_seconds,
    )
    try:
        await runner.setup()
    except BaseException:
        # A start-up step failed (the metrics port taken, say): stop the ones that started.
        await app.cleanup()
        raise
    host, port = settings.listen_address()
    site = web.TCPSite(
        runner,
        host,
        port,
        shutdown_timeout=settings.proxy.shutdown_grace_seconds,
        reuse_port=worker or None,
        backlog=LISTEN_BACKLOG,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if worker:
        # Workers share the port, and each loads the metadata itself: a worker listening before
        # it has them would answer the sign-ins the kernel sends it with a 502 page, while the
        # other worker tells the readiness probe all is well.
        await _metadata_or_stop(app, stop, WORKER_METADATA_WAIT_SECONDS)
        if stop.is_set():
            await runner.cleanup()
            return
    try:
        await site.start()
    except OSError as exc:
        # Taken since the start-up check, or the check was skipped: one line, not a traceback.
        await runner.cleanup()
        raise ConfigurationError([cannot_listen("GATEWAY_LISTEN", host, port, exc)]) from None
    # Everything built at start-up lives as long as the process: keep it out of the collector's
    # way, and collect young objects less often, so that collections stop adding latency tails.
    # No full collection first: it would find only the start-up's garbage (about 2,000 objects
    # left over from building classes at import, holding no descriptors) and cost 40 to 65 ms
    # here, on the event loop, before the first request. Frozen, that garbage stays, unvisited.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    gc.enable()  # off during start-up (gateway/__main__.py)
    log.info(
        "%s listening on %s:%d, %s",
        build_info.describe(),
        host,
        port,
        "forward-auth only" if settings.forward_auth_only else f"upstream {settings.upstream}",
    )
    await stop.wait()
    app[DRAINING].set()
    log.info("stopping: not ready, draining for %.1fs", settings.proxy.drain_seconds)
    await asyncio.sleep(settings.proxy.drain_seconds)
    await runner.cleanup()
    log.info("stopped")


async def _metadata_or_stop(app: web.Application, stop: asyncio.Event, seconds: float) -> None:
    """Until the identity provider's metadata is loaded, `stop` is set, or `seconds` pass."""
    client = app[MSAL]
    waits = [asyncio.ensure_future(client.loaded()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
    if not client.ready and not stop.is_set():
        log.warning(
            "the identity provider's metadata is not loaded after %.0fs; serving anyway "
            "(sign-in answers 502 until it is)",
            seconds,
        )


def _loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    return uvloop.new_event_loop


def preload(settings: Settings) -> None:
    """Import now what serving `settings` imports only once it starts (the store's client, the
    event loop): a supervisor calls this before forking, so that its workers share them."""
    with contextlib.suppress(ImportError):  # each worker reports it (serve)
        _loop_factory(settings.event_loop)
    for module in start_up_modules(settings):
        importlib.import_module(module)


def serve(settings: Settings, *, worker: bool = False) -> int:
    """Run until SIGTERM or SIGINT. Raises ConfigurationError when a listener cannot open."""
    logs.configure(settings.log.format, settings.log.level)
    try:
        factory = _loop_factory(settings.event_loop)
    except ImportError:
        raise ConfigurationError(
            [Problem("GATEWAY_EVENT_LOOP", "is uvloop but uvloop is not installed")]
        ) from None
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(_serve(settings, worker))
    finally:
        logs.shutdown()
    return 0
