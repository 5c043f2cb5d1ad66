"""Starting and stopping the emulator inside an existing event loop.

`start(config)` prepares the state directory (CA, server certificate, signing key; the slow RSA
work runs in a worker thread), binds an HTTPS listener and returns a `RunningDevIdp`: the control
API plus the URLs clients need. It refuses a non-loopback address unless forced.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web

from .app import build_app, build_browser_app
from .config import DevIdpConfig, is_loopback_host
from .control_api import DevIdpControl
from .signing_keys import KeyRing, SigningKey, load_or_create_signing_key
from .state import DevIdpState, Urls
from .tls import (
    CA_FILE,
    create_ca,
    issue_server_certificate,
    load_or_create_ca,
    server_context,
)

ACCESS_LOG: Final = logging.getLogger("devidp.access")
SHUTDOWN_TIMEOUT_SECONDS: Final = 2.0


class NonLoopbackRefused(ValueError):
    """The configured host is not a loopback address and `force_non_loopback` is off."""


def check_listen_address(host: str, *, force: bool) -> None:
    """Raise NonLoopbackRefused (one line, saying how to override) for a non-loopback host."""
    if force or is_loopback_host(host):
        return
    raise NonLoopbackRefused(
        f"refusing to listen on {host!r}: the development identity provider issues tokens for "
        "anyone who asks, so it listens on loopback only (override with --allow-non-loopback "
        "or force_non_loopback=True)"
    )


@dataclass(frozen=True, slots=True)
class _Material:
    state_dir: Path
    server_pem: Path
    signing_key: SigningKey
    temporary: bool
    context: ssl.SSLContext


def _server_names(config: DevIdpConfig) -> tuple[str, ...]:
    return tuple(h for h in (config.host, config.public_host) if h)


def _prepare(config: DevIdpConfig) -> _Material:
    temporary = config.state_dir is None
    state_dir = config.state_dir or Path(tempfile.mkdtemp(prefix="devidp-"))
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca = load_or_create_ca(state_dir)
    server_pem = issue_server_certificate(ca, _server_names(config), state_dir)
    return _Material(
        state_dir,
        server_pem,
        load_or_create_signing_key(state_dir),
        temporary,
        server_context(server_pem),
    )


class RunningDevIdp(DevIdpControl):
    """A listening emulator: the control API plus where clients find it.

    `authority` is what msal's `authority=` takes; `ca_path` is the PEM file clients must trust.
    Call `stop()` on the loop that started it.
    """

    def __init__(
        self,
        state: DevIdpState,
        runner: web.AppRunner,
        material: _Material,
        browser_runner: web.AppRunner | None = None,
    ) -> None:
        super().__init__(state)
        self._state = state
        self._runner = runner
        self._material = material
        self._browser_runner = browser_runner

    @property
    def browser_url(self) -> str:
        """Where browsers are sent: the plain-http pages listener, if there is one."""
        return self._state.urls.browser_base_url or self.base_url

    @property
    def base_url(self) -> str:
        return self._state.urls.base_url

    @property
    def authority(self) -> str:
        return self._state.urls.authority

    @property
    def issuer(self) -> str:
        return self._state.urls.issuer

    @property
    def port(self) -> int:
        return (
            self._state.config.port
            if not self._runner.addresses
            else int(self._runner.addresses[0][1])
        )

    @property
    def graph_url(self) -> str:
        """The Microsoft Graph base URL this emulator serves (`.../v1.0`)."""
        return f"{self.base_url}/v1.0"

    @property
    def ca_path(self) -> Path:
        return self._material.state_dir / CA_FILE

    @property
    def state_dir(self) -> Path:
        return self._material.state_dir

    @property
    def client_id(self) -> str:
        """The first configured client's id (the default client unless configured otherwise)."""
        return self._state.config.clients[0].client_id

    @property
    def client_secret(self) -> str | None:
        return self._state.config.clients[0].client_secret

    @property
    def control_url(self) -> str:
        return f"{self.base_url}/_devidp"

    async def reissue_tls_certificate(self, *, new_ca: bool = False) -> Path:
        """Serve a new TLS certificate from now on, as a provider whose certificate is renewed
        does; with `new_ca`, issued by a new CA written over `ca.pem` (whoever trusts only the
        old CA is refused at their next connection). Connections kept alive are closed (once
        idle), so that every client's next request shakes hands again. Await it on the loop
        that started the emulator; returns `ca_path`."""
        state_dir, names = self._material.state_dir, _server_names(self._state.config)

        def issue() -> Path:
            ca = create_ca(state_dir) if new_ca else load_or_create_ca(state_dir)
            return issue_server_certificate(ca, names, state_dir)

        pem = await asyncio.to_thread(issue)
        # A context's certificate is copied into each connection when it starts: open ones
        # keep the old one, new ones get this.
        self._material.context.load_cert_chain(pem)
        server = self._runner.server
        assert server is not None, "the emulator is not serving"
        await server.shutdown(SHUTDOWN_TIMEOUT_SECONDS)  # the connections; the listener stays
        return self.ca_path

    async def stop(self) -> None:
        """Close the listener (waiting briefly for requests in flight) and drop a temporary
        state directory."""
        if self._browser_runner is not None:
            await self._browser_runner.cleanup()
        await self._runner.cleanup()
        if self._material.temporary:
            shutil.rmtree(self._material.state_dir, ignore_errors=True)


async def start(config: DevIdpConfig, *, clock: Callable[[], float] = time.time) -> RunningDevIdp:
    """Start serving `config` on the running loop. Raises NonLoopbackRefused or OSError."""
    check_listen_address(config.host, force=config.force_non_loopback)
    material = await asyncio.to_thread(_prepare, config)
    state = DevIdpState(config, KeyRing(material.signing_key), clock)
    runner = web.AppRunner(
        build_app(state), access_log=ACCESS_LOG, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS
    )
    await runner.setup()
    site = web.TCPSite(
        runner,
        config.host,
        config.port,
        ssl_context=material.context,
    )
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        if material.temporary:
            shutil.rmtree(material.state_dir, ignore_errors=True)
        raise
    browser_runner, browser_url = None, None
    if config.browser_port is not None:
        browser_runner = web.AppRunner(
            build_browser_app(state),
            access_log=ACCESS_LOG,
            shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
        )
        await browser_runner.setup()
        try:
            await web.TCPSite(browser_runner, config.host, config.browser_port).start()
        except BaseException:
            await browser_runner.cleanup()
            await runner.cleanup()
            if material.temporary:
                shutil.rmtree(material.state_dir, ignore_errors=True)
            raise
        browser_url = f"http://{config.url_host}:{int(browser_runner.addresses[0][1])}"
    running = RunningDevIdp(state, runner, material, browser_runner)
    state.urls = Urls(f"https://{config.url_host}:{running.port}", config.tenant_id, browser_url)
    return running
