"""A real nginx in front of a gateway in forward-auth mode, for end-to-end tests.

The server block is the documented configuration itself (deploy/nginx/forward-auth.conf, two
applications on one host, and the per-location lines it includes from
deploy/nginx/snippets/msal-gateway-auth.conf) with its placeholders replaced, so the tests prove
what users copy. nginx runs in the foreground
(`daemon off`) from a private prefix directory holding the configuration, pid file, logs and
temporary files, so it needs no root and never touches a system-wide nginx: `main_config` writes
that preamble, for the benchmark's nginx instances too. A missing binary fails under CI and skips
otherwise, with the install hint.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from support.binaries import require_binary
from support.paths import DEPLOY
from support.ports import accepts, free_port

SNIPPET: Final = DEPLOY / "nginx" / "forward-auth.conf"
# Included by every protected location, relative to nginx.conf's directory (Debian's /etc/nginx).
LOCATION_SNIPPET: Final = DEPLOY / "nginx" / "snippets" / "msal-gateway-auth.conf"
DEBIAN_BINARY: Final = "/usr/sbin/nginx"
# The snippet's placeholders, each replaced exactly once (a changed snippet fails loudly here
# instead of silently testing something else).
GATEWAY_PLACEHOLDER: Final = "server msal-gateway:8000;"
APP_PLACEHOLDER: Final = "server app:8080;"
APP2_PLACEHOLDER: Final = "server app2:8080;"
LISTEN_PLACEHOLDER: Final = "listen 80;"
VERIFY_LINE: Final = "proxy_pass http://msal_gateway/.auth/verify;"


def require_nginx() -> str:
    return require_binary("nginx", "nginx", DEBIAN_BINARY)


def _replace_once(text: str, old: str, new: str) -> str:
    count = text.count(old)
    if count != 1:
        raise AssertionError(f"{SNIPPET.name}: expected {old!r} once, found it {count} times")
    return text.replace(old, new)


def forward_auth_server(
    *, gateway: str, app: str, app2: str, port: int, verify_url: str | None = None
) -> str:
    """The documented configuration for a gateway and two applications at host:port addresses
    (the first at /, the second at /app2/), listening on 127.0.0.1:`port`. `verify_url`
    replaces where the auth subrequest goes (a dead port, to prove nginx fails closed) while
    sign-in still reaches the gateway."""
    text = SNIPPET.read_text()
    text = _replace_once(text, GATEWAY_PLACEHOLDER, f"server {gateway};")
    text = _replace_once(text, APP_PLACEHOLDER, f"server {app};")
    text = _replace_once(text, APP2_PLACEHOLDER, f"server {app2};")
    text = _replace_once(text, LISTEN_PLACEHOLDER, f"listen 127.0.0.1:{port};")
    if verify_url is not None:
        text = _replace_once(text, VERIFY_LINE, f"proxy_pass {verify_url};")
    return text


def main_config(
    prefix: Path,
    http: Sequence[str],
    *,
    user: str | None,
    workers: int = 1,
    worker_connections: int = 256,
    error_log_level: str = "info",
    access_log: bool = True,
) -> str:
    """nginx.conf for an nginx that keeps everything it writes (pid, logs, temporary files) under
    `prefix`, so it needs no system configuration and never touches a system-wide nginx; `http`
    are the lines inside the http block (server blocks, includes). As root the workers switch
    to `user`; as any other user nginx ignores `user` with a warning, so pass None."""
    log = f"access_log {prefix}/access.log;" if access_log else "access_log off;"
    lines = [
        f"user {user};" if user else "",
        f"worker_processes {workers};",
        f"pid {prefix}/nginx.pid;",
        f"error_log {prefix}/error.log {error_log_level};",
        f"events {{ worker_connections {worker_connections}; }}",
        "http {",
        f"    {log}",
        # The compiled-in temp paths (/var/lib/nginx/...) are root's; nginx creates these at start.
        f"    client_body_temp_path {prefix}/client_body;",
        f"    proxy_temp_path {prefix}/proxy;",
        f"    fastcgi_temp_path {prefix}/fastcgi;",
        f"    uwsgi_temp_path {prefix}/uwsgi;",
        f"    scgi_temp_path {prefix}/scgi;",
        "    default_type application/octet-stream;",
        *http,
        "}",
    ]
    return "\n".join(line for line in lines if line) + "\n"


class Nginx:
    """nginx with the documented forward-auth configuration: `gateway`, `app` and `app2` are
    host:port addresses (`app2` defaults to `app`)."""

    def __init__(
        self, *, gateway: str, app: str, app2: str | None = None, verify_url: str | None = None
    ) -> None:
        self.binary = require_nginx()
        self.port = free_port()
        self.prefix = Path(tempfile.mkdtemp(prefix="gw-nginx-"))
        server_file = self.prefix / "forward-auth.conf"
        server_file.write_text(
            forward_auth_server(
                gateway=gateway,
                app=app,
                app2=app2 or app,
                port=self.port,
                verify_url=verify_url,
            )
        )
        # Where the documented `include snippets/...;` finds it: next to nginx.conf.
        (self.prefix / "snippets").mkdir()
        shutil.copy(LOCATION_SNIPPET, self.prefix / "snippets" / LOCATION_SNIPPET.name)
        # As root the workers would switch to the compiled-in user (nobody), which cannot enter
        # the 0700 prefix directory; staying root is fine for a loopback test server.
        user = "root" if os.geteuid() == 0 else None
        config = main_config(self.prefix, [f"    include {server_file};"], user=user)
        (self.prefix / "nginx.conf").write_text(config)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        # stderr goes to a file: nginx reports errors there before it has read error_log.
        with open(self.prefix / "stderr.log", "wb") as stderr:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    "-p",
                    str(self.prefix),
                    "-c",
                    str(self.prefix / "nginx.conf"),
                    "-g",
                    "daemon off;",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self._process.returncode}:\n{self.logs()}")
            if accepts(self.port):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"nginx did not listen on port {self.port}:\n{self.logs()}")

    def logs(self) -> str:
        """stderr and the error log, for failure messages."""
        parts = []
        for name in ("stderr.log", "error.log"):
            path = self.prefix / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    def access_log(self) -> str:
        path = self.prefix / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self._process is not None:
            # SIGTERM is nginx's fast shutdown: the master stops its workers and exits.
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
            self._process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.prefix, ignore_errors=True)
