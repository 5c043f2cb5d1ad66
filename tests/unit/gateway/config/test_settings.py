"""Configuration: validation messages that name the variable to fix, the YAML file under the
environment, *_FILE secrets, the AZURE_* workload-identity fallbacks, typo detection, and the
`check-config` command run as a real process. Only environment variables are patched.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import pytest
from support.paths import REPO

from gateway.config.loading import (
    ConfigurationError,
    load_settings,
    unknown_variables,
)
from gateway.config.settings import Settings

BASE_ENV: Final = {
    "GATEWAY_UPSTREAM": "http://127.0.0.1:8080",
    "GATEWAY_PUBLIC_URL": "https://app.example.com",
    "GATEWAY_CLIENT_ID": "00000000-0000-0000-0000-0000000000c1",
    "GATEWAY_TENANT_ID": "contoso.onmicrosoft.com",
    "GATEWAY_CLIENT_SECRET": "client-secret-value",
}
GOOD_COOKIE_SECRET: Final = "k" * 32


def _is_ours(name: str) -> bool:
    return name.upper().startswith(("GATEWAY_", "AZURE_"))


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """load_settings reads os.environ: start every test with no GATEWAY_* or AZURE_* variable."""
    for name in list(os.environ):
        if _is_ours(name):
            monkeypatch.delenv(name)
    yield


def configure(
    monkeypatch: pytest.MonkeyPatch, *, drop: tuple[str, ...] = (), **overrides: str
) -> None:
    env = {**BASE_ENV, **overrides}
    for name in drop:
        env.pop(name, None)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def problems(config_file: Path | None = None) -> list[str]:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(config_file)
    lines = [str(problem) for problem in caught.value.problems]
    assert lines
    return lines


def assert_every_line_names_a_variable(lines: list[str]) -> None:
    for line in lines:
        assert "GATEWAY_" in line, line
        assert "\n" not in line


# ---- a valid configuration ----


def test_minimal_configuration_loads_with_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch)
    settings = load_settings()
    assert settings.authority_url == "https://login.microsoftonline.com/contoso.onmicrosoft.com"
    assert settings.public_origin == "https://app.example.com"
    assert settings.redirect_uri == "https://app.example.com/.auth/login/aad/callback"
    assert settings.cookie_secure is True
    assert settings.session_cookie_name == "__Host-msal-gateway"
    assert settings.response_mode == "form_post"
    assert settings.session_store == "memory"
    assert settings.client_secret is not None
    assert settings.client_secret.get_secret_value() == "client-secret-value"
    assert "client-secret-value" not in repr(settings)


# ---- every problem names its variable ----


@pytest.mark.parametrize("missing", ["GATEWAY_UPSTREAM", "GATEWAY_CLIENT_ID", "GATEWAY_PUBLIC_URL"])
def test_missing_required_variable_is_named(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    configure(monkeypatch, drop=(missing,))
    [line] = problems()
    assert line.startswith(f"{missing} is required: ")  # and what it is, from its description


def test_all_missing_variables_are_reported_together(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, drop=("GATEWAY_UPSTREAM", "GATEWAY_CLIENT_ID", "GATEWAY_PUBLIC_URL"))
    assert sorted(line.partition(":")[0] for line in problems()) == [
        "GATEWAY_CLIENT_ID is required",
        "GATEWAY_PUBLIC_URL is required",
        "GATEWAY_UPSTREAM is required",
    ]


def bad(case_id: str, named: str, *, drop: tuple[str, ...] = (), **env: str) -> pytest.ParameterSet:
    """A refused configuration: BASE_ENV with `env` set and `drop` removed; `named` lists the
    variables (space-separated) that the report must mention."""
    return pytest.param(env, drop, tuple(named.split()), id=case_id)


NO_TENANT: Final = ("GATEWAY_TENANT_ID",)
NO_SECRET: Final = ("GATEWAY_CLIENT_SECRET",)
INVALID: Final = [
    bad(
        "public-url-path-dot-segment",
        "GATEWAY_PUBLIC_URL",
        GATEWAY_PUBLIC_URL="https://app.example.com/a/../b",
    ),
    bad(
        "public-url-path-encoded",
        "GATEWAY_PUBLIC_URL",
        GATEWAY_PUBLIC_URL="https://app.example.com/pay%72oll",
    ),
    bad(
        "public-url-path-auth",
        "GATEWAY_PUBLIC_URL",
        GATEWAY_PUBLIC_URL="https://app.example.com/.auth",
    ),
    bad(
        "public-url-path-empty-segment",
        "GATEWAY_PUBLIC_URL",
        GATEWAY_PUBLIC_URL="https://h.example/a//b",
    ),
    bad(
        "strip-prefix-without-prefix",
        "GATEWAY_PROXY__STRIP_PREFIX GATEWAY_PUBLIC_URL",
        GATEWAY_PROXY__STRIP_PREFIX="true",
    ),
    bad(
        "cookie-domain-not-containing-the-host",
        "GATEWAY_SESSION__COOKIE_DOMAIN GATEWAY_PUBLIC_URL",
        GATEWAY_SESSION__COOKIE_DOMAIN="apps.contoso.com",
    ),
    bad(
        "cookie-domain-suffix-is-not-a-parent",
        "GATEWAY_SESSION__COOKIE_DOMAIN GATEWAY_PUBLIC_URL",
        GATEWAY_PUBLIC_URL="https://evilexample.com",
        GATEWAY_SESSION__COOKIE_DOMAIN="example.com",
    ),
    bad(
        "cookie-domain-one-label",
        "GATEWAY_SESSION__COOKIE_DOMAIN",
        GATEWAY_SESSION__COOKIE_DOMAIN="com",
    ),
    bad(
        "cookie-domain-leading-dot",
        "GATEWAY_SESSION__COOKIE_DOMAIN",
        GATEWAY_SESSION__COOKIE_DOMAIN=".example.com",
    ),
    bad(
        "cookie-domain-over-http",
        "GATEWAY_SESSION__COOKIE_DOMAIN GATEWAY_PUBLIC_URL",
        GATEWAY_PUBLIC_URL="http://localhost:8000",
        GATEWAY_SESSION__COOKIE_DOMAIN="localhost.example",
    ),
    bad(
        "return-hosts-without-cookie-domain",
        "GATEWAY_SIGNIN__RETURN_HOSTS GATEWAY_SESSION__COOKIE_DOMAIN",
        GATEWAY_SIGNIN__RETURN_HOSTS="wiki.example.com",
    ),
    bad(
        "return-hosts-outside-cookie-domain",
        "GATEWAY_SIGNIN__RETURN_HOSTS GATEWAY_SESSION__COOKIE_DOMAIN",
        GATEWAY_SESSION__COOKIE_DOMAIN="example.com",
        GATEWAY_SIGNIN__RETURN_HOSTS="wiki.example.com *.evil.org",
    ),
    bad(
        "return-hosts-not-a-host",
        "GATEWAY_SIGNIN__RETURN_HOSTS",
        GATEWAY_SESSION__COOKIE_DOMAIN="example.com",
        GATEWAY_SIGNIN__RETURN_HOSTS="https://wiki.example.com/",
    ),
    bad(
        "return-hosts-inner-wildcard",
        "GATEWAY_SIGNIN__RETURN_HOSTS",
        GATEWAY_SESSION__COOKIE_DOMAIN="example.com",
        GATEWAY_SIGNIN__RETURN_HOSTS="a.*.example.com",
    ),
    bad("public-url-query", "GATEWAY_PUBLIC_URL", GATEWAY_PUBLIC_URL="https://app.example.com/?a"),
    bad(
        "public-url-http-remote", "GATEWAY_PUBLIC_URL", GATEWAY_PUBLIC_URL="http://app.example.com"
    ),
    bad("public-url-http-private", "GATEWAY_PUBLIC_URL", GATEWAY_PUBLIC_URL="http://10.0.0.5:8000"),
    bad("public-url-http-any", "GATEWAY_PUBLIC_URL", GATEWAY_PUBLIC_URL="http://0.0.0.0:8000"),
    bad(
        "public-url-http-lookalike",
        "GATEWAY_PUBLIC_URL",
        GATEWAY_PUBLIC_URL="http://localhost.evil",
    ),
    bad("public-url-not-a-url", "GATEWAY_PUBLIC_URL", GATEWAY_PUBLIC_URL="app.example.com"),
    # An origin has no userinfo, and "?" or "#" alone would end up inside the redirect URI.
    bad(
        "public-url-userinfo",
        "GATEWAY_PUBLIC_URL",
        GATEWAY_PUBLIC_URL="https://u:p@app.example.com",
    ),
    bad(
        "public-url-empty-query",
        "GATEWAY_PUBLIC_URL",
        GATEWAY_PUBLIC_URL="https://app.example.com?",
    ),
    bad(
        "public-url-empty-fragment",
        "GATEWAY_PUBLIC_URL",
        GATEWAY_PUBLIC_URL="https://app.example.com#",
    ),
    # Credentials would have to become an Authorization header (the bearer token's place); a
    # query cannot sit in front of every request's path.
    bad("upstream-userinfo", "GATEWAY_UPSTREAM", GATEWAY_UPSTREAM="http://u:p@127.0.0.1:8080"),
    bad("upstream-query", "GATEWAY_UPSTREAM", GATEWAY_UPSTREAM="http://127.0.0.1:8080/?a=1"),
    bad("upstream-fragment", "GATEWAY_UPSTREAM", GATEWAY_UPSTREAM="http://127.0.0.1:8080/#a"),
    bad("client-id-empty", "GATEWAY_CLIENT_ID", GATEWAY_CLIENT_ID=""),
    bad("client-secret-empty", "GATEWAY_CLIENT_SECRET", GATEWAY_CLIENT_SECRET=""),
    bad("upstream-not-a-url", "GATEWAY_UPSTREAM", GATEWAY_UPSTREAM="127.0.0.1:8080"),
    bad("scope-openid", "GATEWAY_SCOPES", GATEWAY_SCOPES="openid api://app/.default"),
    bad("scope-profile", "GATEWAY_SCOPES", GATEWAY_SCOPES="api://app/read,profile"),
    bad("scope-offline-access", "GATEWAY_SCOPES", GATEWAY_SCOPES="offline_access"),
    bad(
        "organizations-no-allow-list", "GATEWAY_ALLOWED_TENANTS", GATEWAY_TENANT_ID="organizations"
    ),
    bad("common-no-allow-list", "GATEWAY_ALLOWED_TENANTS", GATEWAY_TENANT_ID="Common"),
    bad(
        "organizations-authority-no-allow-list",
        "GATEWAY_ALLOWED_TENANTS",
        drop=NO_TENANT,
        GATEWAY_AUTHORITY="https://login.microsoftonline.com/organizations",
    ),
    bad(
        "redis-no-url-no-secret",
        "GATEWAY_REDIS_URL GATEWAY_COOKIE_SECRET",
        GATEWAY_SESSION_STORE="redis",
    ),
    bad(
        "redis-no-secret",
        "GATEWAY_COOKIE_SECRET",
        GATEWAY_SESSION_STORE="redis",
        GATEWAY_REDIS_URL="redis://127.0.0.1:6379/0",
    ),
    bad("redis-url-scheme", "GATEWAY_REDIS_URL", GATEWAY_REDIS_URL="http://127.0.0.1:6379"),
    bad("short-cookie-secret", "GATEWAY_COOKIE_SECRET", GATEWAY_COOKIE_SECRET="k" * 31),
    bad(
        "secret-and-secret-file",
        "GATEWAY_CLIENT_SECRET GATEWAY_CLIENT_SECRET_FILE",
        GATEWAY_CLIENT_SECRET_FILE="/dev/null",
    ),
    bad("no-credential", "GATEWAY_CLIENT_SECRET", drop=NO_SECRET),
    bad(
        "secret-and-certificate",
        "GATEWAY_CLIENT_SECRET GATEWAY_CLIENT_CERTIFICATE_FILE",
        GATEWAY_CLIENT_CERTIFICATE_FILE="/dev/null",
    ),
    bad(
        "missing-certificate-file",
        "GATEWAY_CLIENT_CERTIFICATE_FILE",
        drop=NO_SECRET,
        GATEWAY_CLIENT_CERTIFICATE_FILE="/nonexistent/cert.pem",
    ),
    bad("missing-ca-bundle", "GATEWAY_CA_BUNDLE", GATEWAY_CA_BUNDLE="/nonexistent/ca.pem"),
    bad(
        "http-authority",
        "GATEWAY_AUTHORITY",
        drop=NO_TENANT,
        GATEWAY_AUTHORITY="http://login.microsoftonline.com/contoso",
    ),
    bad(
        "authority-without-tenant",
        "GATEWAY_AUTHORITY",
        drop=NO_TENANT,
        GATEWAY_AUTHORITY="https://login.microsoftonline.com",
    ),
    bad(
        "authority-with-query",
        "GATEWAY_AUTHORITY",
        drop=NO_TENANT,
        GATEWAY_AUTHORITY="https://login.microsoftonline.com/contoso?x=1",
    ),
    bad(
        "http-oidc-authority",
        "GATEWAY_OIDC_AUTHORITY",
        drop=NO_TENANT,
        GATEWAY_OIDC_AUTHORITY="http://idp.example.com/realm",
    ),
    bad(
        "oidc-authority-with-tenant",
        "GATEWAY_OIDC_AUTHORITY GATEWAY_TENANT_ID",
        GATEWAY_OIDC_AUTHORITY="https://idp.example.com/realm",
    ),
    bad(
        "oidc-authority-with-authority",
        "GATEWAY_OIDC_AUTHORITY GATEWAY_AUTHORITY",
        drop=NO_TENANT,
        GATEWAY_OIDC_AUTHORITY="https://idp.example.com/realm",
        GATEWAY_AUTHORITY="https://login.microsoftonline.com/contoso",
    ),
    bad("no-tenant-or-authority", "GATEWAY_TENANT_ID GATEWAY_AUTHORITY", drop=NO_TENANT),
    bad(
        "absolute-ttl-below-idle",
        "GATEWAY_SESSION__ABSOLUTE_TTL_SECONDS GATEWAY_SESSION__IDLE_TTL_SECONDS",
        GATEWAY_SESSION__IDLE_TTL_SECONDS="3600",
        GATEWAY_SESSION__ABSOLUTE_TTL_SECONDS="600",
    ),
    bad(
        "form-post-over-http",
        "GATEWAY_SIGNIN__RESPONSE_MODE GATEWAY_PUBLIC_URL",
        GATEWAY_PUBLIC_URL="http://127.0.0.1:8000",
        GATEWAY_SIGNIN__RESPONSE_MODE="form_post",
    ),
    bad(
        "idle-ttl-not-a-number",
        "GATEWAY_SESSION__IDLE_TTL_SECONDS",
        GATEWAY_SESSION__IDLE_TTL_SECONDS="eight hours",
    ),
    bad(
        "idle-ttl-zero", "GATEWAY_SESSION__IDLE_TTL_SECONDS", GATEWAY_SESSION__IDLE_TTL_SECONDS="0"
    ),
    bad(
        "clock-skew-over-5-minutes",
        "GATEWAY_SIGNIN__CLOCK_SKEW_SECONDS",
        GATEWAY_SIGNIN__CLOCK_SKEW_SECONDS="301",
    ),
    bad(
        "response-mode-unknown",
        "GATEWAY_SIGNIN__RESPONSE_MODE",
        GATEWAY_SIGNIN__RESPONSE_MODE="fragment",
    ),
    bad("cookie-name-chars", "GATEWAY_SESSION__COOKIE_NAME", GATEWAY_SESSION__COOKIE_NAME="a;b=c"),
    bad("listen-without-port", "GATEWAY_LISTEN", GATEWAY_LISTEN="127.0.0.1"),
    bad("listen-port-range", "GATEWAY_LISTEN", GATEWAY_LISTEN="127.0.0.1:70000"),
    bad(
        "public-path-relative",
        "GATEWAY_PROXY__PUBLIC_PATHS",
        GATEWAY_PROXY__PUBLIC_PATHS="/health static/",
    ),
    bad(
        "public-path-under-auth",
        "GATEWAY_PROXY__PUBLIC_PATHS",
        GATEWAY_PROXY__PUBLIC_PATHS="/.auth/me",
    ),
    bad("session-store-unknown", "GATEWAY_SESSION_STORE", GATEWAY_SESSION_STORE="memcached"),
    bad(
        "websocket-message-tiny",
        "GATEWAY_PROXY__WEBSOCKET_MAX_MESSAGE_BYTES",
        GATEWAY_PROXY__WEBSOCKET_MAX_MESSAGE_BYTES="100",
    ),
    bad(
        "websocket-message-huge",
        "GATEWAY_PROXY__WEBSOCKET_MAX_MESSAGE_BYTES",
        GATEWAY_PROXY__WEBSOCKET_MAX_MESSAGE_BYTES=str(1 << 30),
    ),
    bad(
        "websocket-open-timeout-zero",
        "GATEWAY_PROXY__WEBSOCKET_OPEN_TIMEOUT_SECONDS",
        GATEWAY_PROXY__WEBSOCKET_OPEN_TIMEOUT_SECONDS="0",
    ),
    bad(
        "websocket-heartbeat-negative",
        "GATEWAY_PROXY__WEBSOCKET_HEARTBEAT_SECONDS",
        GATEWAY_PROXY__WEBSOCKET_HEARTBEAT_SECONDS="-1",
    ),
    bad(
        "websocket-cap-zero",
        "GATEWAY_PROXY__WEBSOCKET_MAX_PER_USER",
        GATEWAY_PROXY__WEBSOCKET_MAX_PER_USER="0",
    ),
]


@pytest.mark.parametrize(("overrides", "dropped", "named"), INVALID)
def test_invalid_configuration_is_refused_with_every_line_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch,
    overrides: dict[str, str],
    dropped: tuple[str, ...],
    named: tuple[str, ...],
) -> None:
    configure(monkeypatch, drop=dropped, **overrides)
    lines = problems()
    assert_every_line_names_a_variable(lines)
    report = "\n".join(lines)
    for variable in named:
        assert variable in report, report


def test_secret_values_are_not_echoed_in_the_report(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, GATEWAY_COOKIE_SECRET="tooShortSecretValue")
    report = "\n".join(problems())
    assert "tooShortSecretValue" not in report
    assert "client-secret-value" not in report


def test_several_problems_are_reported_together(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(
        monkeypatch,
        drop=("GATEWAY_CLIENT_ID",),
        GATEWAY_PUBLIC_URL="http://app.example.com",
        GATEWAY_SCOPES="openid",
    )
    report = "\n".join(problems())
    for variable in ("GATEWAY_CLIENT_ID", "GATEWAY_PUBLIC_URL", "GATEWAY_SCOPES"):
        assert variable in report


# ---- accepted variants ----


@pytest.mark.parametrize(
    "public_url",
    ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000", "http://127.0.0.2"],
)
def test_http_public_url_is_allowed_on_loopback_for_development(
    monkeypatch: pytest.MonkeyPatch, public_url: str
) -> None:
    configure(monkeypatch, GATEWAY_PUBLIC_URL=public_url)
    settings = load_settings()
    assert settings.cookie_secure is False
    assert settings.response_mode == "query"
    assert settings.session_cookie_name == "msal-gateway"
    assert settings.public_origin == public_url


@pytest.mark.parametrize(
    "public_url",
    [
        "https://app.example.com",
        "https://app.example.com/",
        "https://APP.Example.com",
        "https://app.example.com:443",
        "https://app.example.com:8443/",
        "http://127.0.0.1:8000",
    ],
)
def test_redirect_uri_is_the_origin_plus_the_callback_path(
    monkeypatch: pytest.MonkeyPatch, public_url: str
) -> None:
    configure(monkeypatch, GATEWAY_PUBLIC_URL=public_url)
    settings = load_settings()
    parts = urlsplit(settings.redirect_uri)
    assert parts.path == "/.auth/login/aad/callback"
    assert (parts.query, parts.fragment, parts.username) == ("", "", None)
    assert settings.redirect_uri == settings.public_origin + parts.path
    assert not settings.public_origin.endswith("/")


@pytest.mark.parametrize(
    ("public_url", "prefix", "session_cookie", "signin_cookie"),
    [
        ("https://app.example.com", "", "__Host-msal-gateway", "__Host-msal-gateway-signin"),
        (
            "https://intranet.example.com/payroll",
            "/payroll",
            "__Secure-msal-gateway-payroll",
            "__Secure-msal-gateway-payroll-signin",
        ),
        (
            "https://intranet.example.com/team/pay.roll/",
            "/team/pay.roll",
            "__Secure-msal-gateway-team-pay.roll",
            "__Secure-msal-gateway-team-pay.roll-signin",
        ),
        ("http://127.0.0.1:8000/a", "/a", "msal-gateway-a", "msal-gateway-a-signin"),
    ],
)
def test_a_path_prefix_scopes_endpoints_and_cookies(
    monkeypatch: pytest.MonkeyPatch,
    public_url: str,
    prefix: str,
    session_cookie: str,
    signin_cookie: str,
) -> None:
    configure(monkeypatch, GATEWAY_PUBLIC_URL=public_url)
    settings = load_settings()
    assert settings.path_prefix == prefix
    assert settings.public_base == settings.public_origin + prefix
    assert "/" not in settings.public_origin.partition("://")[2]
    assert settings.redirect_uri == settings.public_origin + prefix + "/.auth/login/aad/callback"
    assert settings.auth_path("/.auth/me") == prefix + "/.auth/me"
    assert settings.session_cookie.name == session_cookie
    assert settings.signin_cookie.name == signin_cookie
    # Path= the prefix (which rules out __Host-); the sign-in binding is never domain-wide.
    assert settings.session_cookie.path == settings.signin_cookie.path == (prefix or "/")
    assert settings.session_cookie.domain is settings.signin_cookie.domain is None


def test_a_cookie_domain_widens_the_session_cookie_only(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(
        monkeypatch,
        GATEWAY_PUBLIC_URL="https://auth.apps.example.com",
        GATEWAY_SESSION__COOKIE_DOMAIN="Apps.Example.com",
        GATEWAY_SIGNIN__RETURN_HOSTS="*.apps.example.com wiki.apps.example.com:8443",
    )
    settings = load_settings()
    assert settings.session_cookie.name == "__Secure-msal-gateway"
    assert settings.session_cookie.domain == "apps.example.com"
    assert settings.signin_cookie.name == "__Host-msal-gateway-signin"
    assert settings.signin_cookie.domain is None


@pytest.mark.parametrize(
    ("netloc", "allowed"),
    [
        ("wiki.apps.example.com", True),
        ("wiki.apps.example.com:443", True),
        ("a.b.apps.example.com", True),
        ("wiki.apps.example.com:8443", True),
        ("other.apps.example.com:8443", False),
        ("apps.example.com", False),  # the wildcard names hosts under it, not itself
        ("evilapps.example.com", False),
        ("wiki.apps.example.com.evil.org", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_return_hosts_match_exact_names_wildcards_and_ports(
    monkeypatch: pytest.MonkeyPatch, netloc: str, allowed: bool
) -> None:
    configure(
        monkeypatch,
        GATEWAY_PUBLIC_URL="https://auth.apps.example.com",
        GATEWAY_SESSION__COOKIE_DOMAIN="apps.example.com",
        GATEWAY_SIGNIN__RETURN_HOSTS="*.apps.example.com wiki.apps.example.com:8443",
    )
    assert load_settings().is_return_host(netloc) is allowed


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        ("https://login.microsoftonline.com/contoso/", "https://login.microsoftonline.com/contoso"),
        (
            "https://login.microsoftonline.com/contoso//",
            "https://login.microsoftonline.com/contoso",
        ),
        ("https://login.microsoftonline.com/contoso", "https://login.microsoftonline.com/contoso"),
    ],
)
def test_authority_trailing_slash_is_normalised(
    monkeypatch: pytest.MonkeyPatch, authority: str, expected: str
) -> None:
    configure(monkeypatch, drop=("GATEWAY_TENANT_ID",), GATEWAY_AUTHORITY=authority)
    settings = load_settings()
    assert settings.authority_url == expected
    assert settings.tenant == "contoso"


def test_azure_authority_host_builds_the_default_authority(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure(monkeypatch, GATEWAY_TENANT_ID="contoso")
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us/")
    assert load_settings().authority_url == "https://login.microsoftonline.us/contoso"


def test_multi_tenant_with_an_allow_list_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, GATEWAY_TENANT_ID="organizations", GATEWAY_ALLOWED_TENANTS="t1, t2 t3")
    settings = load_settings()
    assert settings.is_multi_tenant
    assert settings.allowed_tenants == ("t1", "t2", "t3")


def test_oidc_authority_alone_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(
        monkeypatch, drop=("GATEWAY_TENANT_ID",), GATEWAY_OIDC_AUTHORITY="https://idp.example/r/"
    )
    settings = load_settings()
    assert settings.authority_url == "https://idp.example/r"
    assert settings.tenant is None


def test_redis_with_url_and_secret_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(
        monkeypatch,
        GATEWAY_SESSION_STORE="redis",
        GATEWAY_REDIS_URL="rediss://:a-redis-password@cache.example:6380/0",
        GATEWAY_COOKIE_SECRET=GOOD_COOKIE_SECRET,
    )
    assert load_settings().session_store == "redis"


def test_public_paths_are_split_on_spaces_and_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, GATEWAY_PROXY__PUBLIC_PATHS="/health, /static/  /favicon.ico")
    assert load_settings().proxy.public_paths == ("/health", "/static/", "/favicon.ico")


# ---- *_FILE secrets ----


def test_client_secret_file_is_read_and_stripped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret_file = tmp_path / "client-secret"
    secret_file.write_text("from-the-file\n", encoding="utf-8")
    configure(
        monkeypatch, drop=("GATEWAY_CLIENT_SECRET",), GATEWAY_CLIENT_SECRET_FILE=str(secret_file)
    )
    settings = load_settings()
    assert settings.client_secret is not None
    assert settings.client_secret.get_secret_value() == "from-the-file"


def test_cookie_secret_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret_file = tmp_path / "cookie-secret"
    secret_file.write_text(GOOD_COOKIE_SECRET + "\n", encoding="utf-8")
    configure(monkeypatch, GATEWAY_COOKIE_SECRET_FILE=str(secret_file))
    settings = load_settings()
    assert settings.cookie_secret is not None
    assert settings.cookie_secret.get_secret_value() == GOOD_COOKIE_SECRET


def test_short_cookie_secret_from_a_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret_file = tmp_path / "cookie-secret"
    secret_file.write_text("short\n", encoding="utf-8")
    configure(monkeypatch, GATEWAY_COOKIE_SECRET_FILE=str(secret_file))
    assert any("GATEWAY_COOKIE_SECRET" in line for line in problems())


@pytest.mark.parametrize("variable", ["GATEWAY_CLIENT_SECRET_FILE", "GATEWAY_COOKIE_SECRET_FILE"])
def test_unreadable_secret_file_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str
) -> None:
    configure(monkeypatch, drop=("GATEWAY_CLIENT_SECRET",), **{variable: str(tmp_path / "nope")})
    lines = problems()
    assert_every_line_names_a_variable(lines)
    assert any(variable in line for line in lines)


# ---- the YAML file, under the environment ----


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text, encoding="utf-8")
    return path


FULL_YAML: Final = """\
upstream: http://127.0.0.1:9000
public_url: https://app.example.com
client_id: client-from-yaml
tenant_id: tenant-from-yaml
client_secret: secret-from-yaml
scopes: api://app/.default
session:
  idle_ttl_seconds: 50
  absolute_ttl_seconds: 100000
proxy:
  public_paths: /health /static/
"""


def test_yaml_file_alone_is_a_complete_configuration(tmp_path: Path) -> None:
    settings = load_settings(write_yaml(tmp_path, FULL_YAML))
    assert str(settings.upstream) == "http://127.0.0.1:9000/"
    assert settings.client_id == "client-from-yaml"
    assert settings.tenant == "tenant-from-yaml"
    assert settings.scopes == ("api://app/.default",)
    assert settings.session.idle_ttl_seconds == 50
    assert settings.proxy.public_paths == ("/health", "/static/")


def test_environment_wins_over_the_yaml_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GATEWAY_CLIENT_ID", "client-from-env")
    monkeypatch.setenv("GATEWAY_SESSION__IDLE_TTL_SECONDS", "60")
    settings = load_settings(write_yaml(tmp_path, FULL_YAML))
    assert settings.client_id == "client-from-env"
    assert settings.session.idle_ttl_seconds == 60
    # Nested values the environment does not set still come from the file.
    assert settings.session.absolute_ttl_seconds == 100000
    assert settings.tenant_id == "tenant-from-yaml"


def test_yaml_keys_are_case_insensitive(tmp_path: Path) -> None:
    settings = load_settings(write_yaml(tmp_path, FULL_YAML.replace("client_id:", "CLIENT_ID:")))
    assert settings.client_id == "client-from-yaml"


def test_typo_in_the_yaml_file_is_named(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, FULL_YAML + "sesion:\n  idle_ttl_seconds: 5\n")
    # Named by its key in the file, which is where the operator will look for it.
    assert problems(path) == [f"{path}: sesion is not a known setting (did you mean session?)"]


def test_nested_typo_in_the_yaml_file_is_named(tmp_path: Path) -> None:
    text = FULL_YAML.replace("  idle_ttl_seconds: 50", "  idle_ttl: 50")
    path = write_yaml(tmp_path, text)
    # Once, by its key path, with the field it was meant to be.
    assert problems(path) == [
        f"{path}: session.idle_ttl is not a known setting (did you mean idle_ttl_seconds?)"
    ]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("upstream: [unclosed\n", "not valid YAML"),
        ("- a list\n- not a mapping\n", "must hold a mapping"),
        ("just a string\n", "must hold a mapping"),
    ],
)
def test_unusable_yaml_file_is_one_problem(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, fragment: str
) -> None:
    configure(monkeypatch)
    [line] = problems(write_yaml(tmp_path, text))
    assert line.startswith("--config")
    assert fragment in line


def test_missing_yaml_file_is_one_problem(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    configure(monkeypatch)
    [line] = problems(tmp_path / "absent.yaml")
    assert line.startswith("--config: cannot read")


def test_empty_yaml_file_adds_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    configure(monkeypatch)
    assert load_settings(write_yaml(tmp_path, "")).client_id == BASE_ENV["GATEWAY_CLIENT_ID"]


# ---- AZURE_* workload identity fallbacks ----


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "azure-identity-token"
    path.write_text("eyJ.federated.token", encoding="utf-8")
    return path


def test_azure_variables_fill_client_tenant_and_federated_token(
    monkeypatch: pytest.MonkeyPatch, token_file: Path
) -> None:
    configure(monkeypatch, drop=("GATEWAY_CLIENT_ID", "GATEWAY_TENANT_ID", "GATEWAY_CLIENT_SECRET"))
    monkeypatch.setenv("AZURE_CLIENT_ID", "azure-client")
    monkeypatch.setenv("AZURE_TENANT_ID", "azure-tenant")
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    settings = load_settings()
    assert settings.client_id == "azure-client"
    assert settings.tenant == "azure-tenant"
    assert settings.federated_token_file == token_file
    assert settings.client_secret is None


def test_gateway_variables_win_over_azure_ones(
    monkeypatch: pytest.MonkeyPatch, token_file: Path
) -> None:
    configure(monkeypatch, GATEWAY_CLIENT_ID="gateway-client", GATEWAY_TENANT_ID="gw-tenant")
    monkeypatch.setenv("AZURE_CLIENT_ID", "azure-client")
    monkeypatch.setenv("AZURE_TENANT_ID", "azure-tenant")
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    settings = load_settings()
    assert settings.client_id == "gateway-client"
    assert settings.tenant == "gw-tenant"
    # An explicit client secret wins over the injected token file: still exactly one credential.
    assert settings.federated_token_file is None
    assert settings.client_secret is not None


def test_yaml_wins_over_azure_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AZURE_CLIENT_ID", "azure-client")
    assert load_settings(write_yaml(tmp_path, FULL_YAML)).client_id == "client-from-yaml"


def test_azure_token_file_that_does_not_exist_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    configure(monkeypatch, drop=("GATEWAY_CLIENT_SECRET",))
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(tmp_path / "missing-token"))
    report = "\n".join(problems())
    assert "GATEWAY_FEDERATED_TOKEN_FILE" in report


# ---- typos in variable names ----


@pytest.mark.parametrize(
    "variable",
    [
        "GATEWAY_CLIENTID",
        "GATEWAY_CLIENT_SECRETS",
        "GATEWAY_SESSION_IDLE_TTL_SECONDS",
        "GATEWAY_SESSION__IDLE_TTL",
        "GATEWAY_PROXY__PUBLIC_PATH",
        "GATEWAY_PUBLICURL",
        "gateway_upstrem",
    ],
)
def test_unknown_variable_is_flagged_with_the_name_it_was_meant_to_be(variable: str) -> None:
    [line] = unknown_variables({variable: "x", "GATEWAY_CLIENT_ID": "c"})
    assert line.startswith(f"{variable} is not a known setting (did you mean GATEWAY_")


def test_every_documented_variable_is_known() -> None:
    environ = {
        "GATEWAY_UPSTREAM": "x",
        "GATEWAY_CLIENT_ID": "x",
        "GATEWAY_CLIENT_SECRET_FILE": "x",
        "GATEWAY_SESSION__IDLE_TTL_SECONDS": "x",
        "GATEWAY_SESSION__ABSOLUTE_TTL_SECONDS": "x",
        "GATEWAY_SIGNIN__RESPONSE_MODE": "x",
        "GATEWAY_PROXY__PUBLIC_PATHS": "x",
        "GATEWAY_MSAL__WORKER_THREADS": "x",
        "GATEWAY_TOKENS__REFRESH_SKEW_SECONDS": "x",
        "GATEWAY_REDIS__MAX_CONNECTIONS": "x",
        "gateway_client_id": "x",
        "AZURE_CLIENT_ID": "x",
        "PATH": "x",
    }
    assert unknown_variables(environ) == []


def test_every_settings_field_is_known_under_its_variable_name() -> None:
    environ = {f"GATEWAY_{name.upper()}": "x" for name in Settings.model_fields}
    assert unknown_variables(environ) == []


# ---- the check-config command ----


def run_check_config(extra: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not _is_ours(name)}
    env.update(extra)
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_config_reports_each_problem_on_its_own_line_with_status_2() -> None:
    result = run_check_config(
        {
            "GATEWAY_CLIENTID": "typo",
            "GATEWAY_PUBLIC_URL": "http://app.example.com",
            "GATEWAY_SCOPES": "openid",
            "GATEWAY_CLIENT_SECRET": "super-secret-value",
        }
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "super-secret-value" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) >= 5
    assert_every_line_names_a_variable(lines)
    for variable in (
        "GATEWAY_CLIENTID",
        "GATEWAY_UPSTREAM",
        "GATEWAY_PUBLIC_URL",
        "GATEWAY_CLIENT_ID",
        "GATEWAY_SCOPES",
    ):
        assert sum(variable + " " in line or variable + ":" in line for line in lines) == 1


def test_check_config_accepts_a_valid_configuration_with_status_0() -> None:
    result = run_check_config(dict(BASE_ENV))
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout
    assert "client-secret-value" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_refuses_a_broken_yaml_file_without_a_traceback(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "- not\n- a mapping\n")
    result = run_check_config(dict(BASE_ENV), "--config", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--config" in result.stderr


def test_check_config_reports_a_yaml_syntax_error_on_one_line(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "upstream: [unclosed\n")
    result = run_check_config(dict(BASE_ENV), "--config", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("msal-gateway: --config:")
    assert "not valid YAML" in lines[0]
