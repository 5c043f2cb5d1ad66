"""Running the gateway's HTTP server, and stopping it gently.

On SIGTERM (Kubernetes' "please stop"): /.auth/readyz turns 503 at once while the listener keeps
accepting for GATEWAY_PROXY__DRAIN_SECONDS, so the load balancer stops sending traffic without a
single refused connection; then the listener closes and requests in flight, streams included, get
up to GATEWAY_PROXY__SHUTDOWN_GRACE_SECONDS to finish; open WebSockets are closed with 1001.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from gateway import logs
from gateway.app import build_app
from gateway.http_errors import QuietAppRunner
from gateway.keys import DRAINING
from gateway.settings import Settings

log = logging.getLogger(__name__)


async def _serve(settings: Settings, worker: bool) -> None:
    # A worker's supervisor serves the metrics listener for all of them (workers.py).
    app = build_app(settings, serve_metrics=not worker)
    runner = QuietAppRunner(
        app,
        handle_signals=False,
        access_log_class=logs.AccessLogger,
        access_log=logging.getLogger("gateway.access") if settings.log.access_log else None,
        shutdown_timeout=settings.proxy.shutdown_grace_seconds,
    )
    await runner.setup()
    host, port = settings.listen_address()
    site = web.TCPSite(
        runner,
        host,
        port,
        shutdown_timeout=settings.proxy.shutdown_grace_seconds,
        reuse_port=worker or None,
    )
    await site.start()
    log.info("msal-gateway listening on %s:%d, upstream %s", host, port, settings.upstream)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    app[DRAINING].set()
    log.info("stopping: not ready, draining for %.1fs", settings.proxy.drain_seconds)
    await asyncio.sleep(settings.proxy.drain_seconds)
    await runner.cleanup()
    log.info("stopped")


def serve(settings: Settings, *, worker: bool = False) -> int:
    logs.configure(settings.log.format, settings.log.level)
    asyncio.run(_serve(settings, worker))
    return 0
