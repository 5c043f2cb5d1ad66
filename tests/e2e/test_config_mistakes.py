"""Configuration mistakes, each run through the real command (`python -m gateway check-config`,
and `serve` for the ones only the machine reveals), in a clean environment with temporary files.

Every row must end in exit status 2, no traceback, no pydantic wording, and one line per expected
problem, each naming the variable, the key in the --config file, or the option to fix; every
problem of a row comes in the same run (issue 15 items 3-8).
"""

from __future__ import annotations

import datetime
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from support.certificates import certificate_pem, private_key_pem, rsa_key
from support.otel import BLOCK_OPENTELEMETRY
from support.paths import REPO
from support.ports import free_port

SECRET: Final = "client-secret-value-never-printed"
BASE: Final = {
    "GATEWAY_UPSTREAM": "http://127.0.0.1:8080",
    "GATEWAY_PUBLIC_URL": "https://app.example.com",
    "GATEWAY_CLIENT_ID": "00000000-0000-0000-0000-0000000000c1",
    "GATEWAY_TENANT_ID": "contoso.onmicrosoft.com",
    "GATEWAY_CLIENT_SECRET": SECRET,
}
NO_SECRET: Final = ("GATEWAY_CLIENT_SECRET",)
REDIS: Final = {"GATEWAY_SESSION_STORE": "redis", "GATEWAY_COOKIE_SECRET": "c" * 32}
PYDANTIC_WORDING: Final = ("Input should", "Value should", "Extra inputs", "Value error", "[type=")


@dataclass(frozen=True)
class Mistake:
    """A configuration with mistakes in it. Values may use {dir} (a temporary directory holding
    the files below), {busy} (a port something listens on) and {config} (the YAML file)."""

    env: dict[str, str]
    expect: tuple[str, ...]  # one line each, containing this
    drop: tuple[str, ...] = ()
    yaml: str | None = None
    files: dict[str, str | bytes] = field(default_factory=dict)
    config: str | None = None  # a --config path other than the YAML written from `yaml`
    without_otel: bool = False


def row(case_id: str, *expect: str, **kwargs: object) -> pytest.ParameterSet:
    env = {key: str(value) for key, value in kwargs.items() if key.startswith("GATEWAY_")}
    rest = {key: value for key, value in kwargs.items() if not key.startswith("GATEWAY_")}
    return pytest.param(Mistake(env=env, expect=expect, **rest), id=case_id)  # type: ignore[arg-type]


def _certificates() -> dict[str, str | bytes]:
    key, other = rsa_key(), rsa_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expired")])
    ended = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    expired = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(ended - datetime.timedelta(days=30))
        .not_valid_after(ended)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    ).decode()
    return {
        "good.pem": private_key_pem(key) + certificate_pem(key),
        "key-only.pem": private_key_pem(key),
        "expired.pem": private_key_pem(key) + expired,
        "mismatched.pem": private_key_pem(key) + certificate_pem(other),
        "encrypted.pem": encrypted + certificate_pem(key),
    }


CERTIFICATES: Final = _certificates()
GARBAGE: Final = {"garbage.pem": "this is not PEM\n"}
EMPTY: Final = {"empty": ""}
NOT_UTF8: Final = {"latin1": b"\xff\xfe secret \xe9"}

MISTAKES: Final = [
    # ---- the issue's cases ----
    row(
        "tracing-without-otel",
        "GATEWAY_LOG__TRACING",
        GATEWAY_LOG__TRACING="true",
        without_otel=True,
    ),
    row(
        "rules-yaml-flow-style-in-env",
        "GATEWAY_POLICY__RULES",
        GATEWAY_POLICY__RULES="[{path: /admin/}]",
    ),
    row("listen-busy", "GATEWAY_LISTEN", GATEWAY_LISTEN="127.0.0.1:{busy}"),
    row("metrics-listen-busy", "GATEWAY_METRICS_LISTEN", GATEWAY_METRICS_LISTEN="127.0.0.1:{busy}"),
    row(
        "listen-equals-metrics",
        "GATEWAY_LISTEN and GATEWAY_METRICS_LISTEN",
        GATEWAY_METRICS_LISTEN="{listen}",
    ),
    row(
        "metrics-on-wildcard-of-listen",
        "GATEWAY_LISTEN and GATEWAY_METRICS_LISTEN",
        GATEWAY_LISTEN="0.0.0.0:{port}",
        GATEWAY_METRICS_LISTEN="127.0.0.1:{port}",
    ),
    row(
        "certificate-not-pem",
        "GATEWAY_CLIENT_CERTIFICATE_FILE",
        drop=NO_SECRET,
        files=GARBAGE,
        GATEWAY_CLIENT_CERTIFICATE_FILE="{dir}/garbage.pem",
    ),
    row(
        "ca-bundle-not-pem",
        "GATEWAY_CA_BUNDLE",
        files=GARBAGE,
        GATEWAY_CA_BUNDLE="{dir}/garbage.pem",
    ),
    row(
        "redis-url-with-memory-store",
        "GATEWAY_REDIS_URL",
        GATEWAY_REDIS_URL="redis://10.0.0.1:6379",
    ),
    row(
        "sentinels-with-memory-store",
        "GATEWAY_REDIS__SENTINELS",
        GATEWAY_REDIS__SENTINELS="10.0.0.1:26379",
    ),
    row("redis-url-garbage", "GATEWAY_REDIS_URL", **REDIS, GATEWAY_REDIS_URL="not a url"),
    row("redis-url-without-host", "GATEWAY_REDIS_URL", **REDIS, GATEWAY_REDIS_URL="redis://:6379"),
    row("admin-token-short", "GATEWAY_ADMIN__TOKEN", GATEWAY_ADMIN__TOKEN="short-token"),
    row("upstream-not-a-url", "GATEWAY_UPSTREAM", GATEWAY_UPSTREAM="foo"),
    row(
        "all-in-one-run",
        "GATEWAY_POLICY__RULES",
        "GATEWAY_SESION__IDLE_TTL_SECONDS",
        "GATEWAY_PROXY__MAX_CONNECTIONS",
        "GATEWAY_SESSION__ABSOLUTE_TTL_SECONDS",
        "GATEWAY_CA_BUNDLE",
        "GATEWAY_LISTEN",
        files=GARBAGE,
        GATEWAY_POLICY__RULES="[{path: /admin/}]",
        GATEWAY_SESION__IDLE_TTL_SECONDS="60",
        GATEWAY_PROXY__MAX_CONNECTIONS="lots",
        GATEWAY_SESSION__IDLE_TTL_SECONDS="7200",
        GATEWAY_SESSION__ABSOLUTE_TTL_SECONDS="3600",
        GATEWAY_CA_BUNDLE="{dir}/garbage.pem",
        GATEWAY_LISTEN="127.0.0.1:{busy}",
    ),
    row(
        "nested-typo-env-once",
        "GATEWAY_SESSION__IDLE_TTL is not a known setting (did you mean "
        "GATEWAY_SESSION__IDLE_TTL_SECONDS?)",
        GATEWAY_SESSION__IDLE_TTL="60",
    ),
    # ---- wrong types ----
    row(
        "idle-ttl-words",
        "GATEWAY_SESSION__IDLE_TTL_SECONDS",
        GATEWAY_SESSION__IDLE_TTL_SECONDS="eight hours",
    ),
    row(
        "max-connections-negative",
        "GATEWAY_PROXY__MAX_CONNECTIONS",
        GATEWAY_PROXY__MAX_CONNECTIONS="-5",
    ),
    row("access-log-maybe", "GATEWAY_LOG__ACCESS_LOG", GATEWAY_LOG__ACCESS_LOG="maybe"),
    row(
        "workers-many", "GATEWAY_WORKERS: must be 'auto' or a whole number", GATEWAY_WORKERS="many"
    ),
    row(
        "clock-skew-too-large",
        "GATEWAY_SIGNIN__CLOCK_SKEW_SECONDS",
        GATEWAY_SIGNIN__CLOCK_SKEW_SECONDS="301",
    ),
    row(
        "slot-wait-words",
        "GATEWAY_PROXY__SLOT_WAIT_SECONDS",
        GATEWAY_PROXY__SLOT_WAIT_SECONDS="ten",
    ),
    row("log-level-unknown", "GATEWAY_LOG__LEVEL", GATEWAY_LOG__LEVEL="VERBOSE"),
    row("store-unknown", "GATEWAY_SESSION_STORE", GATEWAY_SESSION_STORE="memcached"),
    row(
        "graph-page-size-too-large",
        "GATEWAY_GROUPS__GRAPH_PAGE_SIZE",
        GATEWAY_GROUPS__GRAPH_PAGE_SIZE="5000",
    ),
    row(
        "routes-object-not-list",
        "GATEWAY_TOKENS__ROUTES",
        GATEWAY_TOKENS__ROUTES='{"path": "/api/", "scopes": "api://x/.default"}',
    ),
    row(
        "route-without-scopes",
        "GATEWAY_TOKENS__ROUTES[0].scopes is required",
        GATEWAY_TOKENS__ROUTES='[{"path": "/api/"}]',
    ),
    row(
        "rule-path-relative",
        "GATEWAY_POLICY__RULES[0].path",
        GATEWAY_POLICY__RULES='[{"path": "admin/"}]',
    ),
    row("pages-color-name", "GATEWAY_PAGES__COLOR", GATEWAY_PAGES__COLOR="red"),
    row("group-not-json", "GATEWAY_SESSION", GATEWAY_SESSION="idle=5"),
    # ---- empty values ----
    row("upstream-empty", "GATEWAY_UPSTREAM", GATEWAY_UPSTREAM=""),
    row("client-id-empty", "GATEWAY_CLIENT_ID", GATEWAY_CLIENT_ID=""),
    row("listen-empty", "GATEWAY_LISTEN", GATEWAY_LISTEN=""),
    row("client-secret-empty", "GATEWAY_CLIENT_SECRET", GATEWAY_CLIENT_SECRET=""),
    row(
        "idle-ttl-empty", "GATEWAY_SESSION__IDLE_TTL_SECONDS", GATEWAY_SESSION__IDLE_TTL_SECONDS=""
    ),
    row(
        "required-all-missing",
        "GATEWAY_UPSTREAM is required",
        "GATEWAY_PUBLIC_URL is required",
        "GATEWAY_CLIENT_ID is required",
        drop=("GATEWAY_UPSTREAM", "GATEWAY_PUBLIC_URL", "GATEWAY_CLIENT_ID"),
    ),
    # ---- conflicting pairs ----
    row(
        "secret-and-secret-file",
        "set only one of GATEWAY_CLIENT_SECRET and GATEWAY_CLIENT_SECRET_FILE",
        files={"secret": "s"},
        GATEWAY_CLIENT_SECRET_FILE="{dir}/secret",
    ),
    row(
        "admin-token-and-token-file",
        "set only one of GATEWAY_ADMIN__TOKEN and GATEWAY_ADMIN__TOKEN_FILE",
        files={"admin-token": "a" * 40},
        GATEWAY_ADMIN__TOKEN="b" * 40,
        GATEWAY_ADMIN__TOKEN_FILE="{dir}/admin-token",
    ),
    row(
        "secret-and-certificate",
        "set exactly one client credential",
        files=CERTIFICATES,
        GATEWAY_CLIENT_CERTIFICATE_FILE="{dir}/good.pem",
    ),
    row(
        "oidc-authority-and-tenant",
        "GATEWAY_OIDC_AUTHORITY cannot be combined",
        GATEWAY_OIDC_AUTHORITY="https://idp.example.com/realm",
    ),
    row(
        "absolute-below-idle",
        "GATEWAY_SESSION__ABSOLUTE_TTL_SECONDS",
        GATEWAY_SESSION__IDLE_TTL_SECONDS="7200",
        GATEWAY_SESSION__ABSOLUTE_TTL_SECONDS="3600",
    ),
    row("workers-with-memory", "GATEWAY_WORKERS", GATEWAY_WORKERS="2"),
    row(
        "form-post-over-http",
        "GATEWAY_SIGNIN__RESPONSE_MODE=form_post",
        GATEWAY_PUBLIC_URL="http://127.0.0.1:8000",
        GATEWAY_SIGNIN__RESPONSE_MODE="form_post",
    ),
    row(
        "redis-url-and-sentinels",
        "set GATEWAY_REDIS_URL or GATEWAY_REDIS__SENTINELS",
        **REDIS,
        GATEWAY_REDIS_URL="redis://127.0.0.1:6379",
        GATEWAY_REDIS__SENTINELS="127.0.0.1:26379",
    ),
    row(
        "organizations-without-allow-list",
        "GATEWAY_ALLOWED_TENANTS",
        GATEWAY_TENANT_ID="organizations",
    ),
    # ---- unreadable and garbage files ----
    row(
        "secret-file-is-a-directory",
        "GATEWAY_CLIENT_SECRET_FILE: cannot read",
        drop=NO_SECRET,
        GATEWAY_CLIENT_SECRET_FILE="{dir}",
    ),
    row(
        "secret-file-empty",
        "GATEWAY_CLIENT_SECRET_FILE",
        drop=NO_SECRET,
        files=EMPTY,
        GATEWAY_CLIENT_SECRET_FILE="{dir}/empty",
    ),
    row(
        "admin-token-file-too-short",
        "admin-token holds 5 character(s); the token needs at least 32",
        files={"admin-token": "short\n"},
        GATEWAY_ADMIN__TOKEN_FILE="{dir}/admin-token",
    ),
    row(
        "admin-token-file-missing",
        "GATEWAY_ADMIN__TOKEN_FILE: cannot read",
        GATEWAY_ADMIN__TOKEN_FILE="{dir}/nowhere",
    ),
    row(
        "cookie-secret-file-not-utf8",
        "GATEWAY_COOKIE_SECRET_FILE",
        files=NOT_UTF8,
        GATEWAY_COOKIE_SECRET_FILE="{dir}/latin1",
    ),
    row(
        "certificate-key-only",
        "GATEWAY_CLIENT_CERTIFICATE_FILE",
        drop=NO_SECRET,
        files=CERTIFICATES,
        GATEWAY_CLIENT_CERTIFICATE_FILE="{dir}/key-only.pem",
    ),
    row(
        "certificate-key-encrypted",
        "GATEWAY_CLIENT_CERTIFICATE_FILE",
        drop=NO_SECRET,
        files=CERTIFICATES,
        GATEWAY_CLIENT_CERTIFICATE_FILE="{dir}/encrypted.pem",
    ),
    row(
        "certificate-expired",
        "GATEWAY_CLIENT_CERTIFICATE_FILE",
        drop=NO_SECRET,
        files=CERTIFICATES,
        GATEWAY_CLIENT_CERTIFICATE_FILE="{dir}/expired.pem",
    ),
    row(
        "certificate-of-another-key",
        "GATEWAY_CLIENT_CERTIFICATE_FILE",
        drop=NO_SECRET,
        files=CERTIFICATES,
        GATEWAY_CLIENT_CERTIFICATE_FILE="{dir}/mismatched.pem",
    ),
    row(
        "federated-token-empty",
        "GATEWAY_FEDERATED_TOKEN_FILE",
        drop=NO_SECRET,
        files=EMPTY,
        GATEWAY_FEDERATED_TOKEN_FILE="{dir}/empty",
    ),
    row("ca-bundle-missing", "GATEWAY_CA_BUNDLE", GATEWAY_CA_BUNDLE="{dir}/absent.pem"),
    row(
        "redis-ca-file-garbage",
        "GATEWAY_REDIS__CA_FILE",
        **REDIS,
        files=GARBAGE,
        GATEWAY_REDIS_URL="rediss://127.0.0.1:6380",
        GATEWAY_REDIS__CA_FILE="{dir}/garbage.pem",
    ),
    row("config-file-missing", "--config: cannot read", yaml=None, config="{dir}/absent.yaml"),
    row("config-file-not-yaml", "is not valid YAML at line 2", yaml="upstream: [unclosed\n"),
    row("config-file-a-list", "must hold a mapping", yaml="- a\n- b\n"),
    # ---- bad URLs and durations ----
    row(
        "public-url-with-an-encoded-path",
        "GATEWAY_PUBLIC_URL",
        GATEWAY_PUBLIC_URL="https://app.example.com/%61pp",
    ),
    row(
        "cookie-domain-outside-the-public-host",
        "GATEWAY_SESSION__COOKIE_DOMAIN",
        GATEWAY_SESSION__COOKIE_DOMAIN="apps.contoso.com",
    ),
    row(
        "authority-http",
        "GATEWAY_AUTHORITY",
        drop=("GATEWAY_TENANT_ID",),
        GATEWAY_AUTHORITY="http://login.microsoftonline.com/contoso",
    ),
    row("graph-url-http", "GATEWAY_GROUPS__GRAPH_URL", GATEWAY_GROUPS__GRAPH_URL="http://graph"),
    row("drain-negative", "GATEWAY_PROXY__DRAIN_SECONDS", GATEWAY_PROXY__DRAIN_SECONDS="-1"),
    row(
        "assertion-lifetime-too-short",
        "GATEWAY_ASSERTION__LIFETIME_SECONDS",
        GATEWAY_ASSERTION__LIFETIME_SECONDS="5",
    ),
    row("listen-port-out-of-range", "GATEWAY_LISTEN", GATEWAY_LISTEN="127.0.0.1:70000"),
    # ---- GATEWAY_MODE=forward-auth: no upstream, nothing that only acts on relayed requests ----
    row(
        "forward-auth-with-upstream",
        "GATEWAY_UPSTREAM must not be set when GATEWAY_MODE is forward-auth",
        GATEWAY_MODE="forward-auth",
    ),
    row(
        "forward-auth-relay-only-settings",
        "GATEWAY_PROXY__UPSTREAM_READY_PATH acts only on requests the gateway relays",
        "GATEWAY_PROXY__UPSTREAM_HEADERS acts only on requests the gateway relays",
        "GATEWAY_ASSERTION__AUDIENCE is required when GATEWAY_ASSERTION__ENABLED is true",
        drop=("GATEWAY_UPSTREAM",),
        GATEWAY_MODE="forward-auth",
        GATEWAY_PROXY__UPSTREAM_READY_PATH="/healthz",
        GATEWAY_PROXY__UPSTREAM_HEADERS='{"X-Proxy-Secret": "' + SECRET + '"}',
        GATEWAY_ASSERTION__ENABLED="true",
    ),
    row(
        "forward-auth-in-the-file",
        "proxy.websocket_max_per_user (in {config}) acts only on requests the gateway relays",
        drop=("GATEWAY_UPSTREAM",),
        yaml="mode: forward-auth\nproxy:\n  websocket_max_per_user: 4\n",
    ),
    row("mode-unknown", "GATEWAY_MODE: must be one of", GATEWAY_MODE="sidecar"),
    # ---- unknown names with a near miss ----
    row(
        "upstream-typo",
        "GATEWAY_UPSTREM is not a known setting (did you mean GATEWAY_UPSTREAM?)",
        GATEWAY_UPSTREM="http://127.0.0.1:8080",
    ),
    row("client-id-typo", "(did you mean GATEWAY_CLIENT_ID?)", GATEWAY_CLIENTID="x"),
    row(
        "single-underscore-group",
        "(did you mean GATEWAY_SESSION__IDLE_TTL_SECONDS?)",
        GATEWAY_SESSION_IDLE_TTL_SECONDS="60",
    ),
    row(
        "yaml-top-level-typo",
        "{config}: upstrem is not a known setting (did you mean upstream?)",
        yaml="upstrem: http://127.0.0.1:8080\n",
    ),
    row(
        "yaml-rule-key-typo",
        "{config}: policy.rules[0].alow is not a known setting (did you mean allow?)",
        yaml="policy:\n  rules:\n    - {path: /public/, alow: public}\n",
    ),
    # ---- the file and the environment together ----
    row(
        "yaml-bad-value",
        "{config}: session.idle_ttl_seconds",
        yaml="session:\n  idle_ttl_seconds: soon\n",
    ),
    row(
        "yaml-and-env-each-wrong",
        "{config}: session.idle_ttl_seconds",
        "GATEWAY_UPSTREAM",
        yaml="session:\n  idle_ttl_seconds: soon\n",
        GATEWAY_UPSTREAM="nope",
    ),
    row(
        "yaml-cross-field-by-key-path",
        "session.absolute_ttl_seconds (in {config}) must be at "
        "least session.idle_ttl_seconds (in {config})",
        yaml="session:\n  idle_ttl_seconds: 7200\n  absolute_ttl_seconds: 3600\n",
    ),
    row(
        "yaml-rule-path",
        "{config}: policy.rules[0].path",
        yaml="policy:\n  rules:\n    - path: admin\n",
    ),
]
SERVE_TOO: Final = frozenset(
    {
        "listen-busy",
        "metrics-listen-busy",
        "listen-equals-metrics",
        "certificate-not-pem",
        "ca-bundle-not-pem",
        "certificate-expired",
        "tracing-without-otel",
        "rules-yaml-flow-style-in-env",
        "yaml-rule-key-typo",
    }
)


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    """A loopback port something listens on for the whole module."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def _fill(text: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text


def run(command: str, mistake: Mistake, tmp_path: Path, busy: int) -> tuple[int, list[str], str]:
    """The command's exit status, its stderr lines, and the config file's name ('' if none)."""
    port = free_port()
    config = tmp_path / "gateway.yaml"
    values = {"dir": str(tmp_path), "busy": str(busy), "port": str(port),
              "listen": f"127.0.0.1:{port}", "config": str(config)}  # fmt: skip
    for name, content in mistake.files.items():
        mode = "wb" if isinstance(content, bytes) else "w"
        with (tmp_path / name).open(mode) as handle:
            handle.write(content)
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith(("GATEWAY_", "AZURE_", "OTEL_"))
    }
    # A port of its own: the default 0.0.0.0:8000 may be taken on a shared machine.
    env.update({"GATEWAY_LISTEN": values["listen"], **BASE})
    for name in mistake.drop:
        env.pop(name, None)
    env.update({name: _fill(value, values) for name, value in mistake.env.items()})
    args = [sys.executable, "-m", "gateway", command]
    if mistake.yaml is not None:
        config.write_text(mistake.yaml, encoding="utf-8")
        args += ["--config", str(config)]
    elif mistake.config is not None:
        args += ["--config", _fill(mistake.config, values)]
    if mistake.without_otel:
        (tmp_path / "sitecustomize.py").write_text(BLOCK_OPENTELEMETRY, encoding="utf-8")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    done = subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert "Task was destroyed" not in done.stderr, done.stderr
    return done.returncode, done.stderr.splitlines(), str(config)


def assert_reported(mistake: Mistake, status: int, lines: list[str], config: str) -> None:
    report = "\n".join(lines)
    assert status == 2, report
    for wording in PYDANTIC_WORDING:
        assert wording not in report, report
    assert SECRET not in report
    assert all(line.startswith("msal-gateway: ") for line in lines), report
    expected = [_fill(text, {"config": config}) for text in mistake.expect]
    # One line per problem, every problem in this one run.
    assert len(lines) == len(expected), report
    for text in expected:
        assert any(text in line for line in lines), f"{text!r} not in:\n{report}"
    for line in lines:
        assert re.search(r"GATEWAY_|--config|demo --port", line) or config in line, line


@pytest.mark.parametrize("mistake", MISTAKES)
def test_check_config_reports_every_mistake_in_one_run(
    mistake: Mistake, tmp_path: Path, busy_port: int
) -> None:
    status, lines, config = run("check-config", mistake, tmp_path, busy_port)
    assert_reported(mistake, status, lines, config)


@pytest.mark.parametrize("mistake", [m for m in MISTAKES if m.id in SERVE_TOO])
def test_serve_refuses_the_same_mistakes_before_starting(
    mistake: Mistake, tmp_path: Path, busy_port: int
) -> None:
    status, lines, config = run("serve", mistake, tmp_path, busy_port)
    assert_reported(mistake, status, lines, config)


def test_the_table_covers_the_issue_and_at_least_forty_more() -> None:
    assert len(MISTAKES) >= 45


def test_an_unreachable_redis_at_start_is_logged_with_its_host_port_and_setting(
    tmp_path: Path,
) -> None:
    """Not a configuration mistake (Redis may come up later: readiness says so), but the log must
    say which Redis, and which setting names it."""
    dead = free_port()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith(("GATEWAY_", "AZURE_", "OTEL_"))
    }
    env.update(BASE)
    env.update(
        REDIS,
        GATEWAY_LISTEN=f"127.0.0.1:{free_port()}",
        GATEWAY_REDIS_URL=f"redis://127.0.0.1:{dead}/0",
        GATEWAY_LOG__FORMAT="text",
    )
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve"],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert gateway.stderr is not None
        for line in gateway.stderr:
            if "session store" in line:
                break
        else:
            pytest.fail("the gateway ended without logging the unreachable store")
    finally:
        gateway.terminate()
        gateway.communicate(timeout=30)  # reads the rest and closes the pipe
    assert f"Redis at 127.0.0.1:{dead}, GATEWAY_REDIS_URL" in line, line
    assert "is unreachable at start-up" in line
