"""Everything the benchmark measures, started on loopback and torn down again: the nginx upstream
with fixed bodies, nginx proxy_pass, a redis-server, the development identity provider, Apache
with mod_auth_openidc, the bare aiohttp proxy and msal-gateway in its production configuration.

`Stack.start()` brings them up in dependency order; `Stack.stop()` ends every process group and
removes the temporary directory, whatever state `start()` reached. Signing in is `signin`'s job,
measuring `compare`'s.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import apache
import nginx
from processes import (
    BOOTSTRAP_HINT,
    ManagedProcess,
    MissingTool,
    ProcessGroup,
    find_binary,
    wait_for_port,
    wait_until,
)
from support.gateway import env_for
from support.idp import ThreadedDevIdp
from support.paths import REPO
from support.ports import free_port
from wrk import wrk_binary

from devidp import Client, DevIdpConfig, RunningDevIdp
from gateway.config.settings import Settings

GATEWAY_PUBLIC_URL: Final = "https://app.test"
GATEWAY_CALLBACK: Final = f"{GATEWAY_PUBLIC_URL}/.auth/login/aad/callback"
GATEWAY_CLIENT_ID: Final = "6a1f0c2e-9b3d-4e5f-8a7b-0c1d2e3f4a01"
APACHE_CLIENT_ID: Final = "6a1f0c2e-9b3d-4e5f-8a7b-0c1d2e3f4a02"
UPSTREAM_SCOPE: Final = "api://upstream/read"
BENCH_USER: Final = "alice"
UNPRIVILEGED_USER: Final = "www-data"


def check_tools() -> None:
    """Every binary and module the harness needs, before anything starts; raises MissingTool."""
    nginx.nginx_binary()
    apache.apache_binary()
    wrk_binary()
    find_binary("redis-server", "redis-server")
    try:
        import uvloop  # noqa: F401
    except ImportError as exc:
        raise MissingTool(f"uvloop not installed in this Python: {BOOTSTRAP_HINT}") from exc


def server_user() -> str | None:
    """As root, the unprivileged user Apache and nginx workers switch to; else none."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        return "nobody"
    return UNPRIVILEGED_USER


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Stack:
    """The running systems. `gateway_workers` is also the process count of the bare proxy and
    the worker count of nginx proxy_pass, so the three are compared like for like."""

    gateway_workers: int
    access_logs: bool
    keep_temp: bool = False
    gateway_extra_env: dict[str, str] = field(default_factory=dict)
    root: Path = field(init=False)
    group: ProcessGroup = field(default_factory=ProcessGroup)
    user: str | None = field(init=False)
    _idp_thread: ThreadedDevIdp | None = None
    idp: RunningDevIdp | None = None
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    redis: ManagedProcess | None = None
    redis_port: int = 0
    upstream: nginx.NginxServer | None = None
    nginx_proxy: nginx.NginxServer | None = None
    bare: ManagedProcess | None = None
    bare_port: int = 0
    gateway: ManagedProcess | None = None
    gateway_port: int = 0
    apache: apache.ApacheServer | None = None

    def __post_init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="msal-gateway-bench-"))
        # Apache's and nginx's workers (an unprivileged user) read the CA and the bodies here.
        self.root.chmod(0o755)
        self.user = server_user()

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def bare_url(self) -> str:
        return f"http://127.0.0.1:{self.bare_port}"

    @property
    def idp_ca(self) -> Path:
        return self.root / "idp-ca.pem"

    def start(self) -> None:
        self._start_redis()
        apache_port = free_port()
        self._start_idp(apache_port)
        self.upstream = nginx.start_upstream(
            self.root, self.group, user=self.user, access_log=self.access_logs
        )
        self.nginx_proxy = nginx.start_proxy(
            self.root,
            self.group,
            self.upstream,
            workers=self.gateway_workers,
            user=self.user,
            access_log=self.access_logs,
        )
        self._start_bare()
        self._start_gateway()
        self._start_apache(apache_port)

    def _start_redis(self) -> None:
        self.redis_port = free_port()
        directory = self.root / "redis"
        directory.mkdir()
        argv = [
            find_binary("redis-server", "redis-server"),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.redis_port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ]
        self.redis = self.group.add(ManagedProcess("redis-server", argv, directory / "redis.log"))
        wait_for_port(self.redis_port, self.redis)
        wait_until(lambda: _redis_ping(self.redis_port), self.redis, "does not answer", 10)

    def idp_clients(self, apache_port: int) -> tuple[Client, ...]:
        """The identity provider's registrations: the gateway's, and Apache's on `apache_port`."""
        return (
            Client(GATEWAY_CLIENT_ID, self.client_secret, redirect_uris=(GATEWAY_CALLBACK,)),
            Client(
                APACHE_CLIENT_ID,
                self.client_secret,
                redirect_uris=(f"http://127.0.0.1:{apache_port}{apache.REDIRECT_PATH}",),
                display_name="Apache mod_auth_openidc (benchmark)",
            ),
        )

    def _start_idp(self, apache_port: int) -> None:
        clients = self.idp_clients(apache_port)
        config = DevIdpConfig(port=0, state_dir=self.root / "devidp", clients=clients)
        self._idp_thread = ThreadedDevIdp(config)
        self.idp = self._idp_thread.start()
        shutil.copyfile(self.idp.ca_path, self.idp_ca)
        self.idp_ca.chmod(0o644)

    def _start_bare(self) -> None:
        assert self.upstream is not None
        self.bare_port = free_port()
        argv = [
            sys.executable,
            str(REPO / "bench" / "bare_proxy.py"),
            "--listen",
            f"127.0.0.1:{self.bare_port}",
            "--upstream",
            self.upstream.url,
            "--workers",
            str(self.gateway_workers),
            *(["--access-log"] if self.access_logs else []),
        ]
        directory = self.root / "bare"
        directory.mkdir()
        self.bare = self.group.add(ManagedProcess("bare aiohttp proxy", argv, directory / "log"))
        wait_for_port(self.bare_port, self.bare)

    def gateway_settings(self) -> Settings:
        assert self.idp is not None and self.upstream is not None
        return Settings(
            upstream=self.upstream.url,
            public_url=GATEWAY_PUBLIC_URL,
            client_id=GATEWAY_CLIENT_ID,
            client_secret=self.client_secret,
            authority=self.idp.authority,
            ca_bundle=self.idp_ca,
            session_store="redis",
            redis_url=f"redis://127.0.0.1:{self.redis_port}/0",
            cookie_secret=secrets.token_urlsafe(32),
            scopes=UPSTREAM_SCOPE,
            log={"access_log": self.access_logs},
        )

    def gateway_env(self) -> dict[str, str]:
        env = env_for(self.gateway_settings())
        env["GATEWAY_LISTEN"] = f"127.0.0.1:{self.gateway_port}"
        # Stop at once when the harness is done; there is no load balancer to drain.
        env["GATEWAY_PROXY__DRAIN_SECONDS"] = "0"
        env["GATEWAY_PROXY__SHUTDOWN_GRACE_SECONDS"] = "2"
        # One process needs no variable, so this also runs against a gateway without workers.
        if self.gateway_workers > 1:
            env["GATEWAY_WORKERS"] = str(self.gateway_workers)
        env.update(self.gateway_extra_env)
        return env

    def _start_gateway(self) -> None:
        self.gateway_port = free_port()
        directory = self.root / "gateway"
        directory.mkdir()
        self.gateway = self.group.add(
            ManagedProcess(
                "msal-gateway",
                [sys.executable, "-m", "gateway", "serve"],
                directory / "stderr.log",
                env=self.gateway_env(),
                cwd=REPO,
            )
        )
        ready = f"{self.gateway_url}/.auth/readyz"
        wait_until(lambda: _http_ok(ready), self.gateway, f"not ready at {ready}", 30)

    def idp_authority(self) -> str:
        """The identity provider's authority URL, as Apache's discovery needs it."""
        assert self.idp is not None
        return self.idp.authority

    def apache_redis_address(self) -> str | None:
        """Where Apache keeps its session cache (None: shared memory)."""
        return f"127.0.0.1:{self.redis_port}"

    def _start_apache(self, port: int) -> None:
        assert self.upstream is not None
        oidc = apache.OidcClient(
            discovery_url=f"{self.idp_authority()}/v2.0/.well-known/openid-configuration",
            client_id=APACHE_CLIENT_ID,
            client_secret=self.client_secret,
            ca_file=self.idp_ca,
            scopes=f"openid profile email offline_access {UPSTREAM_SCOPE}",
        )
        self.apache = apache.start(
            self.root / "apache",
            self.group,
            port=port,
            upstream_url=self.upstream.url,
            redis_address=self.apache_redis_address(),
            oidc=oidc,
            user=self.user,
            access_log=self.access_logs,
        )

    def stop(self) -> None:
        self.group.stop_all()
        if self._idp_thread is not None:
            try:
                self._idp_thread.stop()
            except Exception as exc:  # the processes are gone; report and go on cleaning
                print(f"warning: stopping the identity provider failed: {exc}")
            self._idp_thread = None
        if self.keep_temp:
            print(f"logs and configurations kept in {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)
