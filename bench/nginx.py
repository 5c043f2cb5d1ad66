"""The nginx instances of the benchmark: the upstream every proxy forwards to, serving fixed
bodies, and the nginx `proxy_pass` reference in front of it.

They are two nginx processes rather than two server blocks of one, so that the CPU time of the
proxy can be read apart from the upstream's. Each runs in the foreground (`daemon off`) from a
private prefix directory holding its configuration, pid file, logs and temporary files, with the
test kit's nginx.conf preamble (support.nginx.main_config), so it needs no system configuration
and never touches a system-wide nginx.
"""

from __future__ import annotations

import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from processes import ManagedProcess, ProcessGroup, find_binary, wait_for_port
from support.nginx import main_config
from support.ports import free_port

# The bodies the upstream serves, by path: fixed bytes, so a proxy that alters them is caught.
BODIES: Final = {
    "/b100": (b"0123456789abcdef" * 7)[:99] + b"\n",
    "/b64k": (b"msal-gateway benchmark body. " * 2300)[: 64 * 1024 - 1] + b"\n",
}
STATUS_PATH: Final = "/.bench/status"
HEADERS_PATH: Final = "/.bench/headers"
# What the harness checks each proxy sends: the bearer token and the user's name.
ECHOED: Final = ("authorization", "x_ms_client_principal_name", "oidc_claim_preferred_username")


def nginx_binary() -> str:
    return find_binary("nginx", "nginx", "/usr/sbin/nginx")


def _main(prefix: Path, workers: int, user: str | None, access_log: bool, http: list[str]) -> str:
    # As root the workers switch to `user`, an unprivileged one; the prefix is readable by it.
    return main_config(
        prefix,
        [
            # Every system under test keeps client connections open for the whole run.
            "    keepalive_requests 1000000;",
            "    keepalive_timeout 75s;",
            *http,
        ],
        user=user,
        workers=workers,
        worker_connections=4096,
        error_log_level="warn",
        access_log=access_log,
    )


def upstream_config(prefix: Path, port: int, workers: int, user: str | None, log: bool) -> str:
    http = [
        "    sendfile on;",
        "    open_file_cache max=16;",
        "    server {",
        f"        listen 127.0.0.1:{port} reuseport backlog=4096;",
        f"        root {prefix}/www;",
        # Counts every request the upstream answered: how the harness knows that a proxy
        # really forwarded what wrk counted as a success (a 302 to sign-in is a 3xx too).
        f"        location = {STATUS_PATH} {{ stub_status; }}",
        # mod_auth_openidc names its headers with underscores (OIDC_CLAIM_...).
        "        underscores_in_headers on;",
        f"        location = {HEADERS_PATH} {{",
        "            default_type text/plain;",
        '            return 200 "' + "".join(f"{h}=$http_{h}\\n" for h in ECHOED) + '";',
        "        }",
        "        location / { try_files $uri =404; }",
        "    }",
    ]
    return _main(prefix, workers, user, log, http)


def proxy_config(
    prefix: Path, port: int, upstream_port: int, workers: int, user: str | None, log: bool
) -> str:
    http = [
        "    upstream app {",
        f"        server 127.0.0.1:{upstream_port};",
        # Pooled keep-alive connections to the upstream, as every other proxy here has.
        "        keepalive 256;",
        "        keepalive_requests 1000000;",
        "    }",
        "    server {",
        f"        listen 127.0.0.1:{port} reuseport backlog=4096;",
        "        location / {",
        "            proxy_pass http://app;",
        "            proxy_http_version 1.1;",
        '            proxy_set_header Connection "";',
        "        }",
        "    }",
    ]
    return _main(prefix, workers, user, log, http)


@dataclass
class NginxServer:
    name: str
    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _start(name: str, prefix: Path, config: str, port: int, group: ProcessGroup) -> NginxServer:
    (prefix / "nginx.conf").write_text(config)
    argv = [nginx_binary(), "-p", str(prefix), "-c", str(prefix / "nginx.conf")]
    process = group.add(ManagedProcess(name, [*argv, "-g", "daemon off;"], prefix / "stderr.log"))
    wait_for_port(port, process)
    return NginxServer(name, port, process)


def start_upstream(
    root: Path, group: ProcessGroup, *, user: str | None, access_log: bool
) -> NginxServer:
    prefix = root / "nginx-upstream"
    www = prefix / "www"
    www.mkdir(mode=0o755, parents=True)
    prefix.chmod(0o755)
    for path, body in BODIES.items():
        target = www / path.lstrip("/")
        target.write_bytes(body)
        target.chmod(0o644)
    port = free_port()
    # One worker per core: the upstream must never be what limits a proxy.
    config = upstream_config(prefix, port, os.cpu_count() or 1, user, access_log)
    return _start("nginx upstream", prefix, config, port, group)


def start_proxy(
    root: Path,
    group: ProcessGroup,
    upstream: NginxServer,
    *,
    workers: int,
    user: str | None,
    access_log: bool,
) -> NginxServer:
    prefix = root / "nginx-proxy"
    prefix.mkdir(mode=0o755)
    port = free_port()
    config = proxy_config(prefix, port, upstream.port, workers, user, access_log)
    return _start("nginx proxy_pass", prefix, config, port, group)


def upstream_requests(upstream: NginxServer) -> int:
    """Requests the upstream has answered so far (stub_status), this one included."""
    with urllib.request.urlopen(upstream.url + STATUS_PATH, timeout=5) as response:  # noqa: S310
        text: str = response.read().decode()
    # "Active connections: N \nserver accepts handled requests\n A H R \n..."
    return int(text.splitlines()[2].split()[2])
