"""Running the real gateway for tests: in-process on an aiohttp TestServer (fast, and the test can
read the app's state), or as `python -m gateway serve` processes (replicas, memory measurements).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import BaseModel, SecretStr

from gateway.app import build_app
from gateway.config.settings import Settings
from support.browser import Browser
from support.ports import free_port
from support.procfs import peak_rss_kib

PUBLIC_URL = "https://app.test"
# The gateway's default cookie names (tests/unit/gateway/config checks the defaults themselves).
SESSION_COOKIE = "__Host-msal-gateway"
SIGNIN_COOKIE = "__Host-msal-gateway-signin"


def settings_for(idp: Any, upstream_url: str, **overrides: Any) -> Settings:
    """Settings for a gateway in front of `upstream_url`, signing in at the development IdP."""
    values: dict[str, Any] = {
        "upstream": upstream_url,
        "public_url": PUBLIC_URL,
        "client_id": idp.client_id,
        "client_secret": idp.client_secret,
        "authority": idp.authority,
        "ca_bundle": idp.ca_path,
    }
    values.update(overrides)
    return Settings(**values)


def shared_redis(redis_url: str) -> dict[str, Any]:
    """Settings of replicas that share sessions in one Redis: the store and one cookie secret."""
    return {
        "session_store": "redis",
        "redis_url": redis_url,
        "cookie_secret": secrets.token_urlsafe(32),
    }


def env_for(settings: Settings) -> dict[str, str]:
    """The same settings as GATEWAY_* variables, for gateway processes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "AZURE_"))}
    data = settings.model_dump(mode="json", exclude_none=True)
    for name, value in data.items():
        if isinstance(value, dict):
            for sub, subvalue in value.items():
                if subvalue is None:
                    continue
                if isinstance(subvalue, dict) or (
                    isinstance(subvalue, list) and any(isinstance(v, dict) for v in subvalue)
                ):
                    text = json.dumps(subvalue)
                elif isinstance(subvalue, list):
                    text = " ".join(subvalue)
                else:
                    text = str(subvalue)
                env[f"GATEWAY_{name.upper()}__{sub.upper()}"] = text
        elif isinstance(value, list):
            env[f"GATEWAY_{name.upper()}"] = " ".join(value)
        else:
            env[f"GATEWAY_{name.upper()}"] = str(value)
    for secret in ("client_secret", "cookie_secret", "cookie_secret_next", "redis_url"):
        field = getattr(settings, secret)
        if field is not None:
            env[f"GATEWAY_{secret.upper()}"] = field.get_secret_value()
    if settings.cookie_secrets_previous:
        env["GATEWAY_COOKIE_SECRETS_PREVIOUS"] = " ".join(
            s.get_secret_value() for s in settings.cookie_secrets_previous
        )
    # model_dump masks secrets in the groups too (e.g. GATEWAY_REDIS__PASSWORD): use the values.
    for group_name in type(settings).model_fields:
        group = getattr(settings, group_name)
        if not isinstance(group, BaseModel):
            continue
        for name in type(group).model_fields:
            value = getattr(group, name)
            if isinstance(value, SecretStr):
                env[f"GATEWAY_{group_name.upper()}__{name.upper()}"] = value.get_secret_value()
    return env


@asynccontextmanager
async def in_process(
    settings: Settings, *, wait: bool = True
) -> AsyncIterator[tuple[str, web.Application]]:
    """The gateway app on a loopback TestServer; yields its URL and the app (for its state).
    With `wait`, only once /.auth/readyz says ready."""
    app = build_app(settings)
    # As the production runner (server/refusals.py QuietAppRunner): request bodies as sent.
    server = TestServer(app, host="127.0.0.1", auto_decompress=False)
    await server.start_server()
    try:
        if wait:
            await wait_ready(str(server.make_url("")).rstrip("/"))
        yield str(server.make_url("")).rstrip("/"), app
    finally:
        await server.close()


async def wait_ready(url: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url + "/.auth/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateway at {url} not ready")
            await asyncio.sleep(0.05)


class GatewayProcess:
    """`python -m gateway serve` on a free loopback port."""

    def __init__(
        self,
        settings: Settings,
        extra_env: Mapping[str, str] | None = None,
        *,
        port: int | None = None,
    ) -> None:
        self.port = free_port() if port is None else port  # a restarted replica keeps its port
        env = env_for(settings)
        env["GATEWAY_LISTEN"] = f"127.0.0.1:{self.port}"
        env["GATEWAY_PROXY__DRAIN_SECONDS"] = "0"  # tests that measure draining set their own
        env.update(extra_env or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self) -> GatewayProcess:
        try:
            await wait_ready(self.url)
        except TimeoutError:
            self.stop()
            raise
        return self

    def rss_peak_kib(self) -> int:
        return peak_rss_kib(self.process.pid)

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def terminate(self) -> None:
        """SIGTERM without waiting: the gateway starts draining."""
        self.process.terminate()

    def halt(self, timeout: float = 15) -> None:
        """SIGTERM and wait, SIGKILL after `timeout` seconds; stderr is left to whoever has been
        reading it (a LogTail, a draining thread)."""
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def stop(self) -> str:
        """SIGTERM, then the process's stderr; `returncode` tells how it ended."""
        self.process.terminate()
        try:
            _, err = self.process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return err.decode(errors="replace")


def idp_ssl(ca_path: str | os.PathLike[str]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_path))


# ---- gateway processes, their logs, and signed-in sessions ----


class LogTail:
    """Reads a gateway process's stderr as it is written, so the pipe never fills up."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        self._stream = process.stderr
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            with self._lock:
                self._chunks.append(line)

    def raw(self) -> bytes:
        with self._lock:
            return b"".join(self._chunks)

    def wait_for(self, needle: bytes, seconds: float = 3.0) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if needle in self.raw():
                return True
            time.sleep(0.02)
        return False

    def join(self) -> None:
        self._thread.join(timeout=10)


async def session_cookie(url: str, idp: Any, user: str = "alice", return_to: str = "/") -> str:
    """Sign `user` in at the gateway at `url` (a process, say) with a scripted browser of its
    own, started at the gateway's sign-in endpoint (nothing reaches the application), and
    return the session cookie's value."""
    browser = Browser(url, PUBLIC_URL, idp_ssl(idp.ca_path))
    try:
        start = await browser.get(f"/.auth/login/aad?post_login_redirect_uri={return_to}")
        assert start.status == 302, start.status
        authorize = await browser.authorize(start.headers["Location"], user)
        assert (await browser.deliver(authorize)).status == 302
        cookie = browser.cookie(SESSION_COOKIE)
        assert cookie is not None
        return cookie
    finally:
        await browser.close()
