"""The Redis settings (gateway.config.redis): the start-up guard that refuses a Redis reachable
beyond loopback without TLS and a password (THREATS.md RS-01), naming the variables to set and
never echoing a secret, and the other rules a Redis configuration must meet."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.config.loading import describe_errors
from gateway.config.settings import Settings

BASE: dict[str, Any] = {
    "upstream": "http://127.0.0.1:8080",
    "public_url": "https://app.example.com",
    "client_id": "00000000-0000-0000-0000-0000000000c1",
    "tenant_id": "contoso.onmicrosoft.com",
    "client_secret": "client-secret-value",
    "session_store": "redis",
    "cookie_secret": "k" * 32,
}


@pytest.fixture(autouse=True)
def no_gateway_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read GATEWAY_* variables: none may leak in from the caller's environment."""
    for name in list(os.environ):
        if name.upper().startswith("GATEWAY_"):
            monkeypatch.delenv(name)


def problems(**values: Any) -> str:
    try:
        Settings(**{**BASE, **values})
    except ValidationError as exc:
        return "\n".join(describe_errors(exc))
    return ""


@pytest.mark.threat("RS-01")
@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://localhost:6379/0",
        "redis://[::1]:6379/0",
        "unix:///run/redis/redis.sock?db=2",
    ],
)
def test_loopback_redis_needs_neither_tls_nor_password(url: str) -> None:
    assert problems(redis_url=url) == ""


@pytest.mark.threat("RS-01")
def test_exposed_redis_without_tls_or_password_is_refused_naming_the_variables() -> None:
    message = problems(redis_url="redis://cache.example:6379/0")
    assert "Redis at cache.example is reachable off this host" in message
    for name in (
        "rediss://",
        "GATEWAY_REDIS__TLS=true",
        "GATEWAY_REDIS__PASSWORD",
        "GATEWAY_REDIS__PASSWORD_FILE",
        "GATEWAY_REDIS__ALLOW_INSECURE=true",
    ):
        assert name in message
    assert message.count("\n") == 0  # one problem, one line


@pytest.mark.threat("RS-01")
def test_exposed_redis_with_a_password_but_no_tls_is_refused_without_echoing_it() -> None:
    message = problems(redis_url="redis://:hunter2-secret@cache.example:6379/0")
    assert "TLS" in message
    assert "a password" not in message
    assert "hunter2" not in message


@pytest.mark.threat("RS-01")
def test_exposed_redis_with_tls_but_no_password_is_refused() -> None:
    message = problems(redis_url="rediss://cache.example:6380/0")
    assert "a password" in message
    assert "TLS (" not in message


@pytest.mark.threat("RS-01")
def test_exposed_redis_with_tls_and_password_is_accepted(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret")
    assert problems(redis_url="rediss://:s3cret@cache.example:6380/0") == ""
    assert problems(redis_url="rediss://cache.example:6380/0", redis={"password": "s3cret"}) == ""
    assert problems(redis_url="rediss://cache:6380/0", redis={"password_file": str(secret)}) == ""


@pytest.mark.threat("RS-01")
def test_allow_insecure_accepts_an_exposed_redis() -> None:
    assert problems(redis_url="redis://cache.example:6379/0", redis={"allow_insecure": True}) == ""


@pytest.mark.threat("RS-01")
def test_exposed_sentinels_need_tls_and_both_passwords() -> None:
    message = problems(redis={"sentinels": "10.0.0.5:26379 10.0.0.6:26379"})
    assert "Redis at 10.0.0.5" in message
    assert "GATEWAY_REDIS__SENTINEL_PASSWORD" in message
    assert "GATEWAY_REDIS__PASSWORD" in message
    settings = {
        "sentinels": "10.0.0.5:26379 10.0.0.6:26379",
        "tls": True,
        "password": "data-pw",
        "sentinel_password": "sentinel-pw",
    }
    assert problems(redis=settings) == ""


@pytest.mark.threat("RS-01")
def test_memory_store_ignores_the_guard_but_refuses_the_unused_url() -> None:
    # The exposure guard is about a Redis in use; a URL the memory store would ignore is its own
    # problem (the operator meant redis, and replicas would not share sessions).
    assert problems(session_store="memory", redis_url="redis://cache.example:6379/0") == (
        "GATEWAY_REDIS_URL is set but GATEWAY_SESSION_STORE is memory, so Redis would not be "
        "used: set GATEWAY_SESSION_STORE=redis, or unset GATEWAY_REDIS_URL"
    )


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, "GATEWAY_REDIS_URL (or GATEWAY_REDIS__SENTINELS) is required"),
        (
            {"redis_url": "redis://127.0.0.1/0", "redis": {"sentinels": "127.0.0.1:26379"}},
            "set GATEWAY_REDIS_URL or GATEWAY_REDIS__SENTINELS, not both",
        ),
        (
            {"redis": {"sentinels": "127.0.0.1:26379", "cluster": True}},
            "GATEWAY_REDIS__CLUSTER and GATEWAY_REDIS__SENTINELS exclude each other",
        ),
        (
            {"redis_url": "redis://127.0.0.1/2", "redis": {"cluster": True}},
            "a Redis Cluster has only database 0",
        ),
        (
            {"redis_url": "redis://127.0.0.1/0", "redis": {"cluster": True, "replica_acks": 1}},
            "GATEWAY_REDIS__REPLICA_ACKS is not supported with GATEWAY_REDIS__CLUSTER",
        ),
        (
            {"redis_url": "redis://127.0.0.1/0", "redis": {"cluster": True, "replica_acks": "all"}},
            "GATEWAY_REDIS__REPLICA_ACKS is not supported with GATEWAY_REDIS__CLUSTER",
        ),
        (
            {"redis_url": "redis://127.0.0.1/0", "redis": {"replica_acks": "all"}},
            "GATEWAY_REDIS__REPLICA_ACKS=all needs GATEWAY_REDIS__SENTINELS (with "
            "GATEWAY_REDIS_URL, give a number of replicas)",
        ),
        (
            {"redis": {"sentinels": "127.0.0.1:26379", "replica_acks": "most"}},
            "GATEWAY_REDIS__REPLICA_ACKS: 'most' is neither all nor a number of replicas",
        ),
        (
            {"redis": {"sentinels": "127.0.0.1:26379", "replica_max_lag_seconds": 0}},
            "GATEWAY_REDIS__REPLICA_MAX_LAG_SECONDS",
        ),
        (
            {"redis_url": "redis://127.0.0.1/1", "redis": {"db": 3}},
            "GATEWAY_REDIS__DB=3 contradicts database 1 in GATEWAY_REDIS_URL",
        ),
        (
            {"redis_url": "redis://:pw@127.0.0.1/0", "redis": {"password": "other"}},
            "set the Redis password in one place",
        ),
        (
            {"redis_url": "redis://u@127.0.0.1/0", "redis": {"username": "v"}},
            "set the Redis user in GATEWAY_REDIS_URL or GATEWAY_REDIS__USERNAME",
        ),
        (
            {"redis_url": "redis://127.0.0.1/0", "redis": {"ca_file": "/dev/null"}},
            "apply only with a rediss:// URL or GATEWAY_REDIS__TLS=true",
        ),
        (
            {"redis_url": "rediss://127.0.0.1/0", "redis": {"key_file": "/etc/hostname"}},
            "GATEWAY_REDIS__KEY_FILE needs GATEWAY_REDIS__CERT_FILE",
        ),
        (
            {"redis_url": "redis://127.0.0.1/0", "redis": {"password_file": "/nonexistent/pw"}},
            "GATEWAY_REDIS__PASSWORD_FILE: no such file: /nonexistent/pw",
        ),
        (
            {"redis": {"sentinels": "127.0.0.1"}},
            "GATEWAY_REDIS__SENTINELS: '127.0.0.1' is not host:port",
        ),
        (
            {"redis_url": "redis://127.0.0.1/0", "redis": {"sentinel_password": "x"}},
            "GATEWAY_REDIS__SENTINEL_PASSWORD applies only with sentinels",
        ),
    ],
)
def test_redis_configuration_rules(values: dict[str, Any], expected: str) -> None:
    assert expected in problems(**values)


def test_sentinel_addresses_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "GATEWAY_UPSTREAM": BASE["upstream"],
        "GATEWAY_PUBLIC_URL": BASE["public_url"],
        "GATEWAY_CLIENT_ID": BASE["client_id"],
        "GATEWAY_TENANT_ID": BASE["tenant_id"],
        "GATEWAY_CLIENT_SECRET": BASE["client_secret"],
        "GATEWAY_COOKIE_SECRET": BASE["cookie_secret"],
        "GATEWAY_SESSION_STORE": "redis",
        "GATEWAY_REDIS__SENTINELS": "127.0.0.1:26379 127.0.0.1:26380 [::1]:26381",
        "GATEWAY_REDIS__SENTINEL_MASTER": "sessions",
        "GATEWAY_REDIS__DB": "3",
        "GATEWAY_REDIS__REPLICA_ACKS": "all",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.redis.replica_acks == "all"
    assert settings.redis.sentinel_addresses == (
        ("127.0.0.1", 26379),
        ("127.0.0.1", 26380),
        ("::1", 26381),
    )
    assert settings.redis.sentinel_master == "sessions"
    assert settings.redis.db == 3
