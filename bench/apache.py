"""Apache 2.4 with mod_auth_openidc and mod_proxy_http, configured the way a deployment in front
of an application would be, as the system msal-gateway is measured against.

The whole configuration is generated into a private directory (no /etc/apache2, no a2enmod):
LoadModule lines for the Debian module directory, mpm_event, one loopback Listen, and a
`<Location />` that requires a valid OpenID Connect session, keeps sessions in Redis
(`OIDCCacheType redis`), passes the claims and the access token upstream as headers, and proxies
to the upstream over pooled keep-alive connections. It runs as `apache2 -f <conf> -DFOREGROUND`.
As root, Apache refuses to serve from root-owned workers, so its children run as an unprivileged
user (www-data); everything they read (the identity provider's CA) is world-readable.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from processes import (
    BOOTSTRAP_HINT,
    ManagedProcess,
    MissingTool,
    ProcessGroup,
    find_binary,
    wait_for_port,
)

MODULES_DIR: Final = Path("/usr/lib/apache2/modules")
MODULES: Final = (
    ("mpm_event_module", "mod_mpm_event.so"),
    ("authn_core_module", "mod_authn_core.so"),
    ("authz_core_module", "mod_authz_core.so"),
    ("authz_user_module", "mod_authz_user.so"),
    ("headers_module", "mod_headers.so"),
    ("proxy_module", "mod_proxy.so"),
    ("proxy_http_module", "mod_proxy_http.so"),
    ("auth_openidc_module", "mod_auth_openidc.so"),
)
REDIRECT_PATH: Final = "/redirect_uri"
SESSION_COOKIE: Final = "mod_auth_openidc_session"


def apache_binary() -> str:
    binary = find_binary("apache2", "apache2", "/usr/sbin/apache2")
    if not (MODULES_DIR / "mod_auth_openidc.so").exists():
        raise MissingTool(
            f"{MODULES_DIR / 'mod_auth_openidc.so'} not found "
            f"(Debian package libapache2-mod-auth-openidc): {BOOTSTRAP_HINT}"
        )
    return binary


def mod_auth_openidc_version() -> str:
    if shutil.which("dpkg-query") is None:
        return "unknown"
    result = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "libapache2-mod-auth-openidc"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or "unknown"


@dataclass(frozen=True)
class OidcClient:
    """What the identity provider registered for Apache."""

    discovery_url: str
    client_id: str
    client_secret: str
    ca_file: Path
    scopes: str


def config(
    directory: Path,
    *,
    port: int,
    upstream_url: str,
    redis_address: str | None,
    oidc: OidcClient,
    user: str | None,
    access_log: bool,
) -> str:
    """The configuration; `redis_address` None keeps sessions in shared memory instead."""
    public = f"http://127.0.0.1:{port}"
    passphrase = secrets.token_urlsafe(32)
    lines = [
        f'ServerRoot "{directory}"',
        "ServerName 127.0.0.1",
        f"Listen 127.0.0.1:{port}",
        f"PidFile {directory}/apache.pid",
        f"DefaultRuntimeDir {directory}/run",
        f"ErrorLog {directory}/error.log",
        "LogLevel warn",
        *(f"LoadModule {name} {MODULES_DIR / so}" for name, so in MODULES),
        *([f"User {user}", f"Group {user}"] if user else []),
        # Enough threads that 128 connections never queue behind spare-thread management, and a
        # fixed pool so no process is started or stopped during a measurement.
        "StartServers 2",
        "ServerLimit 4",
        "ThreadLimit 64",
        "ThreadsPerChild 64",
        "MinSpareThreads 128",
        "MaxSpareThreads 256",
        "MaxRequestWorkers 256",
        "MaxConnectionsPerChild 0",
        # Keep client connections for the whole run, as nginx and aiohttp do.
        "KeepAlive On",
        "MaxKeepAliveRequests 0",
        "KeepAliveTimeout 75",
        *(
            [
                'LogFormat "%h %l %u %t \\"%r\\" %>s %b %D" timed',
                f"CustomLog {directory}/access.log timed",
            ]
            if access_log
            else []
        ),
        # The identity provider (the devidp) and its private CA.
        f"OIDCProviderMetadataURL {oidc.discovery_url}",
        f"OIDCCABundlePath {oidc.ca_file}",
        "OIDCSSLValidateServer On",
        f"OIDCClientID {oidc.client_id}",
        f"OIDCClientSecret {oidc.client_secret}",
        f"OIDCRedirectURI {public}{REDIRECT_PATH}",
        f"OIDCCryptoPassphrase {passphrase}",
        f'OIDCScope "{oidc.scopes}"',
        # Sessions server-side in Redis (encrypted there by default), like the gateway's; or in
        # shared memory, beside the gateway's memory store.
        "OIDCSessionType server-cache",
        *(
            ["OIDCCacheType redis", f"OIDCRedisCacheServer {redis_address}"]
            if redis_address
            else ["OIDCCacheType shm"]
        ),
        # The gateway's idle and absolute limits, so no session lapses during a long run.
        "OIDCSessionInactivityTimeout 28800",
        "OIDCSessionMaxDuration 86400",
        # Claims and tokens go upstream as headers (and environment, the module's default).
        "OIDCPassClaimsAs both",
        "OIDCPassIDTokenAs claims",
        "OIDCRemoteUserClaim preferred_username",
        # The callback is answered by mod_auth_openidc itself, never proxied.
        f"ProxyPass {REDIRECT_PATH} !",
        f"ProxyPass / {upstream_url}/",
        f"ProxyPassReverse / {upstream_url}/",
        "<Location />",
        "    AuthType openid-connect",
        "    Require valid-user",
        # The same bearer token the gateway sends, from the session's access token.
        '    RequestHeader set Authorization "Bearer %{OIDC_access_token}e" env=OIDC_access_token',
        "</Location>",
    ]
    return "\n".join(lines) + "\n"


@dataclass
class ApacheServer:
    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def redirect_uri(self) -> str:
        return f"{self.url}{REDIRECT_PATH}"


def start(
    directory: Path,
    group: ProcessGroup,
    *,
    port: int,
    upstream_url: str,
    redis_address: str | None,
    oidc: OidcClient,
    user: str | None,
    access_log: bool,
) -> ApacheServer:
    binary = apache_binary()
    directory.mkdir(mode=0o755)
    (directory / "run").mkdir(mode=0o755)
    conf = directory / "apache.conf"
    conf.write_text(
        config(
            directory,
            port=port,
            upstream_url=upstream_url,
            redis_address=redis_address,
            oidc=oidc,
            user=user,
            access_log=access_log,
        )
    )
    # It holds the client secret and the crypto passphrase; the parent reads it as root.
    conf.chmod(0o600)
    check = subprocess.run(  # noqa: S603 - fixed binary, generated path
        [binary, "-t", "-f", str(conf)], capture_output=True, text=True, check=False
    )
    if check.returncode != 0:
        raise RuntimeError(f"apache2 -t refused the generated configuration:\n{check.stderr}")
    process = group.add(
        ManagedProcess(
            "apache2 + mod_auth_openidc",
            [binary, "-f", str(conf), "-DFOREGROUND"],
            directory / "stderr.log",
        )
    )
    try:
        wait_for_port(port, process)
    except RuntimeError as exc:
        error_log = directory / "error.log"
        detail = error_log.read_text(errors="replace")[-3000:] if error_log.exists() else ""
        raise RuntimeError(f"{exc}\n{detail}") from exc
    return ApacheServer(port, process)
