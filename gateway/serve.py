"""Running the gateway's HTTP server until SIGINT/SIGTERM."""

from __future__ import annotations

import logging

from aiohttp import web

from gateway.app import build_app
from gateway.settings import Settings

log = logging.getLogger(__name__)


def serve(settings: Settings) -> int:
    host, port = settings.listen_address()
    log.info("msal-gateway listening on %s:%d, upstream %s", host, port, settings.upstream)
    web.run_app(
        build_app(settings),
        host=host,
        port=port,
        access_log=None,
        print=None,
        shutdown_timeout=10.0,
    )
    return 0
