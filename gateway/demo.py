"""`msal-gateway demo`: the development identity provider, a sample "legacy" application and the
gateway (in-memory store), all on loopback in one process. No Azure tenant, no Redis.

Ports are fixed from the gateway's (--port P): the identity provider's browser pages on P+1 (plain
http), its TLS back channel on P+2, the sample application on P+3.

The sample application knows nothing about OAuth: it trusts the headers the gateway sends and shows
them, which is exactly what an unmodified legacy app behind msal-gateway sees.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import os
import signal
from html import escape
from pathlib import Path
from typing import Final

from aiohttp import web

from devidp.config import DevIdpConfig
from devidp.server import RunningDevIdp
from devidp.server import start as start_devidp
from gateway.app import build_app
from gateway.config.problems import ConfigurationError, cannot_listen
from gateway.config.settings import Settings
from gateway.keys import MSAL
from gateway.server.preflight import bind_problem

DEMO_SCOPE: Final = "api://msal-gateway-demo/read"

_PAGE: Final = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Legacy app</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;
color:#1b1f24}}table{{border-collapse:collapse;width:100%}}td,th{{border:1px solid #d0d7de;
padding:.35rem .5rem;text-align:left;vertical-align:top;font-size:.9rem}}
td:first-child{{white-space:nowrap}}td:last-child{{overflow-wrap:anywhere}}
th{{background:#f6f8fa}}code{{font-size:.85rem}}</style></head><body>
<h1>Hello, {name}</h1>
<p>This page is served by a sample application that knows nothing about sign-in. Everything it
knows about you comes from the headers msal-gateway added to your request.</p>
<p><a href="/.auth/me">/.auth/me</a> · <a href="/.auth/logout">Sign out</a></p>
<h2>Identity headers received</h2><table><tr><th>Header</th><th>Value</th></tr>{rows}</table>
<h2>Decoded X-MS-CLIENT-PRINCIPAL</h2><pre><code>{principal}</code></pre>
</body></html>"""


async def _legacy_page(request: web.Request) -> web.Response:
    identity = {
        name: value
        for name, value in request.headers.items()
        if name.lower().startswith(("x-ms-", "x-forwarded-", "authorization"))
    }
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td><code>{escape(value[:400])}</code></td></tr>"
        for name, value in sorted(identity.items())
    )
    try:
        principal = json.dumps(
            json.loads(base64.b64decode(request.headers.get("X-MS-CLIENT-PRINCIPAL", ""))),
            indent=2,
            ensure_ascii=False,
        )
    except (ValueError, binascii.Error):
        principal = "(none)"
    name = request.headers.get("X-MS-CLIENT-PRINCIPAL-NAME", "stranger")
    return web.Response(
        text=_PAGE.format(name=escape(name), rows=rows, principal=escape(principal)),
        content_type="text/html",
    )


async def _start_site(app: web.Application, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return runner, int(runner.addresses[0][1])


def state_dir() -> Path:
    """Where the demo keeps its identity provider's CA and signing key between runs, so that a
    browser or client trusting them once keeps doing so (XDG state directory)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "msal-gateway" / "demo"


async def _run(port: int) -> None:
    # Fixed ports next to the gateway's: the same addresses every run. The browser only ever
    # visits plain-http loopback pages (gateway, sign-in pages): no certificate warning, no flag.
    # MSAL's back channel (discovery, keys, token) keeps TLS, with the CA kept in state_dir().
    idp = await start_devidp(
        DevIdpConfig(port=port + 2, browser_port=port + 1, state_dir=state_dir())
    )
    legacy = web.Application()
    legacy.router.add_route("*", "/{tail:.*}", _legacy_page)
    try:
        legacy_runner, legacy_port = await _start_site(legacy, port + 3)
    except BaseException:
        await idp.stop()
        raise
    try:
        await _serve_gateway(idp, legacy_port, port)
    finally:
        await legacy_runner.cleanup()
        await idp.stop()


async def _serve_gateway(idp: RunningDevIdp, legacy_port: int, port: int) -> None:
    settings = Settings(
        upstream=f"http://127.0.0.1:{legacy_port}",
        listen=f"127.0.0.1:{port}",
        public_url=f"http://127.0.0.1:{port}",
        client_id=idp.client_id,
        client_secret=idp.client_secret,
        authority=idp.authority,
        ca_bundle=idp.ca_path,
        scopes=DEMO_SCOPE,
    )
    gateway = build_app(settings)
    try:
        gateway_runner, _ = await _start_site(gateway, port)
    except OSError as exc:  # taken since the check in run_demo
        raise ConfigurationError([cannot_listen("demo --port", "127.0.0.1", port, exc)]) from None
    # "Running" only once a sign-in can start: the provider's metadata is loaded.
    for _ in range(200):
        if gateway[MSAL].ready:
            break
        await asyncio.sleep(0.05)
    users = ", ".join(f"{user.username} ({user.name})" for user in idp.users)
    print(
        f"\nmsal-gateway demo is running.\n\n"
        f"  Open:                 http://127.0.0.1:{port}/\n"
        f"  Test users:           {users} (pick one on the sign-in page; no password)\n"
        f"  Identity provider:    sign-in pages at {idp.browser_url}, the gateway's back "
        f"channel at {idp.authority} (development only; CA at {idp.ca_path})\n"
        f"  Sample legacy app:    http://127.0.0.1:{legacy_port}/ (loopback only; reach it "
        f"through the gateway)\n\nPress Ctrl+C to stop.\n",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await gateway_runner.cleanup()


def run_demo(port: int = 8000) -> int:
    """Run until Ctrl+C. Raises ConfigurationError when a port cannot be listened on."""
    # Before anything starts: a taken port must not leave the identity provider running. The
    # demo takes --port and the three after it.
    problems = [
        problem
        for offset, what in enumerate(
            (
                "demo --port",
                "demo --port + 1 (sign-in pages)",
                "demo --port + 2 (provider)",
                "demo --port + 3 (sample app)",
            )
        )
        if (problem := bind_problem(what, "127.0.0.1", port + offset))
    ]
    if problems:
        raise ConfigurationError(problems)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(port))
    return 0
