"""Redis in production shapes, against real processes: Sentinel (DB index, failover under load,
a killed master), TLS and mutual TLS, ACL users and their failures, and the start-up guard that
refuses an exposed Redis (THREATS.md RS-01, RS-07, F-05, F-07, F-25).

The Storage contract itself runs against Sentinel and Cluster in test_storage.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from pydantic import ValidationError
from support.fixtures import Launch
from support.redis_sentinel import SentinelSet
from support.redis_server import RedisServer, RedisTls

from gateway.config.loading import describe_errors
from gateway.config.redis import RedisSettings
from gateway.config.settings import Settings
from gateway.errors import StoreUnavailable
from gateway.store.redis import RedisStorage

NODE_PASSWORD = "node-Pa55-" + secrets.token_hex(8)
SENTINEL_PASSWORD = "sentinel-Pa55-" + secrets.token_hex(8)
STEADY_WRITES = 100  # confirmed before the fault is injected
FAST = {"max_connections": 16, "socket_timeout_seconds": 1, "connect_timeout_seconds": 1}


def redis_settings(**values: Any) -> RedisSettings:
    return RedisSettings.model_validate({**FAST, **values})


def raw(
    address: tuple[str, int], *, db: int = 0, password: str | None = None
) -> redis.asyncio.Redis:
    host, port = address
    return redis.asyncio.Redis(host=host, port=port, db=db, password=password, socket_timeout=2)


# ---- Sentinel: the configured DB and master (RS-07) ----


@pytest.fixture(scope="module")
def guarded_sentinels() -> Iterator[SentinelSet]:
    """Passwords on the data nodes and on the sentinels themselves."""
    sentinels = SentinelSet(password=NODE_PASSWORD, sentinel_password=SENTINEL_PASSWORD).start()
    yield sentinels
    sentinels.cleanup()


def guarded_settings(sentinels: SentinelSet, **values: Any) -> RedisSettings:
    return redis_settings(
        sentinels=sentinels.addresses,
        password=NODE_PASSWORD,
        sentinel_password=SENTINEL_PASSWORD,
        **values,
    )


async def test_sentinel_writes_reach_the_master_in_the_configured_db(
    guarded_sentinels: SentinelSet,
) -> None:
    storage = RedisStorage(None, guarded_settings(guarded_sentinels, db=3))
    try:
        await storage.set("gw:session:db3", b"one", ttl=60)
        assert await storage.replace("gw:tokens:db3", None, b"cas", ttl=60)
        await storage.set("gw:flow:db3", b"flow", ttl=60)
        assert await storage.take("gw:flow:db3") == b"flow"
        async with storage.lock("gw:lock:refresh:db3", ttl=5, wait=1):
            master = guarded_sentinels.master_address()
            on_master = raw(master, db=3, password=NODE_PASSWORD)
            try:
                assert (await on_master.role())[0] == b"master"
                assert await on_master.get("gw:session:db3") == b"one"
                assert await on_master.get("gw:tokens:db3") == b"cas"
                assert await on_master.exists("gw:flow:db3") == 0
                assert await on_master.exists("gw:lock:refresh:db3") == 1
            finally:
                await on_master.aclose()
        db0 = raw(master, db=0, password=NODE_PASSWORD)
        try:
            assert await db0.dbsize() == 0
        finally:
            await db0.aclose()
    finally:
        await storage.close()


async def test_a_write_to_a_replica_is_never_reported_as_done(
    guarded_sentinels: SentinelSet,
) -> None:
    """A URL naming a replica (READONLY): every write fails, none is acknowledged."""
    master = guarded_sentinels.master_address()
    replica = next(n for n in guarded_sentinels.nodes if n.address != master)
    storage = RedisStorage(replica.url, redis_settings(password=NODE_PASSWORD))
    try:
        for write in (
            storage.set("gw:session:r", b"v", ttl=30),
            storage.replace("gw:session:r", None, b"v", ttl=30),
            storage.take("gw:flow:r"),
            storage.delete("gw:session:r"),
        ):
            with pytest.raises(StoreUnavailable):
                await write
        with pytest.raises(StoreUnavailable):
            async with storage.lock("gw:lock:refresh:r", ttl=5, wait=1):
                pass
    finally:
        await storage.close()


async def test_wrong_sentinel_password_is_store_unavailable(
    guarded_sentinels: SentinelSet, caplog: pytest.LogCaptureFixture
) -> None:
    storage = RedisStorage(
        None,
        redis_settings(
            sentinels=guarded_sentinels.addresses,
            password=NODE_PASSWORD,
            sentinel_password="not-the-sentinel-password",
        ),
    )
    try:
        with pytest.raises(StoreUnavailable):
            await storage.get("gw:session:x")
    finally:
        await storage.close()
    assert "no Redis master from the sentinels: 127.0.0.1:" in caplog.text
    assert "AuthenticationError" in caplog.text
    assert "not-the-sentinel-password" not in caplog.text
    assert NODE_PASSWORD not in caplog.text


async def test_gateway_signs_in_through_sentinels_into_the_configured_db(
    launch: Launch, guarded_sentinels: SentinelSet
) -> None:
    """The composition root builds the Sentinel storage from settings (no GATEWAY_REDIS_URL)."""
    running = await launch(
        session_store="redis",
        cookie_secret=secrets.token_urlsafe(32),
        redis={
            "sentinels": guarded_sentinels.addresses,
            "password": NODE_PASSWORD,
            "sentinel_password": SENTINEL_PASSWORD,
            "db": 5,
        },
    )
    response = await running.browser.sign_in("/welcome")
    assert response.status == 302
    on_master = raw(guarded_sentinels.master_address(), db=5, password=NODE_PASSWORD)
    try:
        assert await on_master.keys("gw:session:*")
    finally:
        await on_master.aclose()
    assert (await running.browser.get("/welcome")).status == 200


# ---- Sentinel failover under load (F-05, F-25) ----


@dataclass
class Load:
    """What the workers saw: every confirmed write, and when calls failed or succeeded."""

    confirmed: dict[str, bytes] = field(default_factory=dict)
    failed_at: list[float] = field(default_factory=list)
    succeeded_at: list[float] = field(default_factory=list)
    wrong_reads: list[str] = field(default_factory=list)
    steady: asyncio.Event = field(default_factory=asyncio.Event)

    def window(self) -> float:
        """From the first failure to the first success after the last one."""
        if not self.failed_at:
            return 0.0
        last = self.failed_at[-1]
        back = next(t for t in self.succeeded_at if t > last)
        return back - self.failed_at[0]


async def _worker(storage: RedisStorage, load: Load, index: int, stop: asyncio.Event) -> None:
    mine: list[str] = []
    count = 0
    while not stop.is_set():
        count += 1
        key = f"gw:session:{index:02x}{count:06x}"
        value = secrets.token_bytes(8)
        try:
            if count % 2:
                await storage.set(key, value, ttl=300)
            else:
                assert await storage.replace(key, None, value, ttl=300)
        except StoreUnavailable:
            load.failed_at.append(time.monotonic())
        else:
            load.confirmed[key] = value
            mine.append(key)
            load.succeeded_at.append(time.monotonic())
            if len(load.confirmed) >= STEADY_WRITES:
                load.steady.set()
        if mine:
            probe = random.choice(mine)
            try:
                seen = await storage.get(probe, slide_ttl=300)
            except StoreUnavailable:
                load.failed_at.append(time.monotonic())
            else:
                load.succeeded_at.append(time.monotonic())
                if seen != load.confirmed[probe]:
                    load.wrong_reads.append(probe)
        await asyncio.sleep(0.002)  # leave CPU to the sentinels on a two-core machine


async def _through(sentinels: SentinelSet, fault: Callable[[], None], label: str) -> Load:
    """Run writes and reads, inject `fault`, and keep going until calls have succeeded again for a
    second; then check that every confirmed write is on the new master."""
    storage = RedisStorage(None, redis_settings(sentinels=sentinels.addresses))
    load, stop = Load(), asyncio.Event()
    workers = [asyncio.create_task(_worker(storage, load, i, stop)) for i in range(4)]
    try:
        await asyncio.wait_for(load.steady.wait(), 15)
        assert not load.failed_at, "calls failed before the fault"
        old = sentinels.master_address()
        fault_at = time.monotonic()
        await asyncio.to_thread(fault)
        await asyncio.to_thread(sentinels.wait_for_master_other_than, old)
        switched_at = time.monotonic()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            quiet_since = max(load.failed_at, default=fault_at)
            if time.monotonic() - quiet_since > 1.0 and load.succeeded_at[-1] > quiet_since:
                break
        stop.set()
        await asyncio.gather(*workers)
    finally:
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
        await storage.close()
    new = raw(sentinels.master_address())
    try:
        keys = list(load.confirmed)
        stored = await new.mget(keys)
    finally:
        await new.aclose()
    lost = [key for key, value in zip(keys, stored, strict=True) if value != load.confirmed[key]]
    back_at = next((t for t in load.succeeded_at if t > max(load.failed_at, default=0)), 0.0)
    print(
        f"\n{label}: unavailable for {load.window():.2f}s (back {back_at - switched_at:+.2f}s "
        f"after all sentinels named the new master); {len(load.failed_at)} calls failed, "
        f"{len(load.confirmed)} writes confirmed, {len(lost)} lost, "
        f"{len(load.wrong_reads)} stale reads"
    )
    assert lost == []
    return load


@pytest.fixture
def fresh_sentinels() -> Iterator[SentinelSet]:
    """A deployment per failover: the sentinels refuse a second failover of one master for
    twice the failover timeout."""
    sentinels = SentinelSet().start()
    yield sentinels
    sentinels.cleanup()


async def test_sentinel_failover_under_load_loses_no_confirmed_write(
    fresh_sentinels: SentinelSet,
) -> None:
    load = await _through(fresh_sentinels, fresh_sentinels.failover, "SENTINEL FAILOVER")
    assert load.failed_at, "the failover should have been visible as StoreUnavailable"
    assert load.window() < 10
    assert load.wrong_reads == []


async def test_killed_master_is_replaced_without_losing_confirmed_writes(
    fresh_sentinels: SentinelSet,
) -> None:
    def kill_master() -> None:
        fresh_sentinels.node_at(fresh_sentinels.master_address()).kill()

    load = await _through(fresh_sentinels, kill_master, "kill -9 of the master")
    assert load.failed_at
    assert load.window() < 15
    assert load.wrong_reads == []


# ---- TLS (RS-01) ----


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> RedisTls:
    return RedisTls.issue(tmp_path_factory.mktemp("redis-tls"))


@pytest.fixture
def tls_server(tls_files: RedisTls) -> Iterator[RedisServer]:
    server = RedisServer(tls=tls_files).start()
    yield server
    server.cleanup()


@pytest.fixture
def mtls_server(tls_files: RedisTls) -> Iterator[RedisServer]:
    server = RedisServer(tls=tls_files, tls_auth_clients=True).start()
    yield server
    server.cleanup()


async def round_trip(storage: RedisStorage) -> None:
    try:
        await storage.set("gw:session:tls", b"sealed", ttl=30)
        assert await storage.get("gw:session:tls") == b"sealed"
    finally:
        await storage.close()


async def refused(storage: RedisStorage) -> None:
    try:
        with pytest.raises(StoreUnavailable):
            await storage.ping()
    finally:
        await storage.close()


async def test_tls_with_the_private_ca(tls_server: RedisServer, tls_files: RedisTls) -> None:
    await round_trip(RedisStorage(tls_server.url, redis_settings(ca_file=tls_files.ca)))


async def test_tls_server_not_signed_by_a_trusted_ca_is_refused(tls_server: RedisServer) -> None:
    await refused(RedisStorage(tls_server.url, redis_settings()))


async def test_tls_hostname_mismatch_is_refused_unless_hostname_check_is_off(
    tmp_path: Path,
) -> None:
    files = RedisTls.issue(tmp_path, names=("redis.internal",))
    server = RedisServer(tls=files).start()
    try:
        await refused(RedisStorage(server.url, redis_settings(ca_file=files.ca)))
        await round_trip(
            RedisStorage(server.url, redis_settings(ca_file=files.ca, check_hostname=False))
        )
    finally:
        server.cleanup()


async def test_mutual_tls_with_a_client_certificate(
    mtls_server: RedisServer, tls_files: RedisTls
) -> None:
    settings = redis_settings(
        ca_file=tls_files.ca, cert_file=tls_files.client_cert, key_file=tls_files.client_key
    )
    await round_trip(RedisStorage(mtls_server.url, settings))


async def test_mutual_tls_without_a_client_certificate_is_refused(
    mtls_server: RedisServer, tls_files: RedisTls
) -> None:
    await refused(RedisStorage(mtls_server.url, redis_settings(ca_file=tls_files.ca)))


async def test_tls_setting_turns_tls_on_for_a_redis_url(
    tls_server: RedisServer, tls_files: RedisTls
) -> None:
    plain_url = tls_server.url.replace("rediss://", "redis://")
    await round_trip(RedisStorage(plain_url, redis_settings(tls=True, ca_file=tls_files.ca)))


# ---- ACL users and passwords (RS-01, F-07) ----

ACL_PASSWORD = "acl-Pa55-" + secrets.token_hex(8)


@pytest.fixture
def acl_server() -> Iterator[RedisServer]:
    """The default user is off; `gateway` may use gw:* keys only, and not GETDEL."""
    server = RedisServer(
        extra_args=(
            "--user",
            "default",
            "off",
            "--user",
            "gateway",
            "on",
            f">{ACL_PASSWORD}",
            "~gw:*",
            "+@all",
            "-getdel",
        )
    ).start()
    yield server
    server.cleanup()


def acl_url(server: RedisServer, user: str, password: str) -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


async def test_acl_user_and_password_from_the_url(acl_server: RedisServer) -> None:
    await round_trip(RedisStorage(acl_url(acl_server, "gateway", ACL_PASSWORD), redis_settings()))


async def test_acl_user_and_password_file_from_settings(
    acl_server: RedisServer, tmp_path: Path
) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text(ACL_PASSWORD + "\n")
    settings = redis_settings(username="gateway", password_file=secret)
    await round_trip(RedisStorage(acl_server.url, settings))


@pytest.mark.parametrize("how", ["wrong password", "no credentials"])
async def test_refused_credentials_are_store_unavailable_and_never_logged(
    acl_server: RedisServer, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    wrong = "wrong-Pa55-" + secrets.token_hex(8)
    url = acl_url(acl_server, "gateway", wrong) if how == "wrong password" else acl_server.url
    storage = RedisStorage(url, redis_settings())
    caplog.set_level(logging.INFO)
    try:
        with pytest.raises(StoreUnavailable) as raised:
            await storage.get("gw:session:x")
    finally:
        await storage.close()
    code = "WRONGPASS" if how == "wrong password" else "NOAUTH"
    assert f"Redis refused the gateway's credentials ({code})" in caplog.text
    chain = [raised.value, *_causes(raised.value)]
    for text in (caplog.text, *(str(error) for error in chain), *map(repr, chain)):
        assert wrong not in text
        assert ACL_PASSWORD not in text


def _causes(error: BaseException) -> Iterator[BaseException]:
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
        yield error


async def test_rotated_password_file_is_used_by_new_connections(
    acl_server: RedisServer, tmp_path: Path
) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text(ACL_PASSWORD)
    storage = RedisStorage(acl_server.url, redis_settings(username="gateway", password_file=secret))
    rotated = "rotated-Pa55-" + secrets.token_hex(8)
    admin = redis.asyncio.Redis(port=acl_server.port, username="gateway", password=ACL_PASSWORD)
    try:
        await storage.set("gw:session:rotate", b"v", ttl=60)
        await admin.acl_setuser(
            "gateway", enabled=True, reset_passwords=True, passwords=[f"+{rotated}"]
        )
        secret.write_text(rotated)  # the re-mounted Secret
        # Drop every connection of the user (this one too): the storage's next read fails on its
        # pooled connection, and the retry reconnects with the new password.
        await admin.client_kill_filter(user="gateway")
        assert await storage.get("gw:session:rotate") == b"v"
    finally:
        await admin.aclose()
        await storage.close()


async def test_acl_denied_command_is_store_unavailable_and_logged(
    acl_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    storage = RedisStorage(acl_url(acl_server, "gateway", ACL_PASSWORD), redis_settings())
    try:
        await storage.set("gw:flow:x", b"v", ttl=30)
        with pytest.raises(StoreUnavailable):
            await storage.take("gw:flow:x")  # GETDEL is not granted
    finally:
        await storage.close()
    assert "NOPERM" in caplog.text


async def test_plain_url_against_a_tls_only_redis_is_store_unavailable(
    tls_server: RedisServer,
) -> None:
    await refused(RedisStorage(tls_server.url.replace("rediss://", "redis://"), redis_settings()))


# ---- the start-up guard and the other configuration rules (RS-01, RS-07) ----

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


def test_exposed_redis_with_a_password_but_no_tls_is_refused_without_echoing_it() -> None:
    message = problems(redis_url="redis://:hunter2-secret@cache.example:6379/0")
    assert "TLS" in message
    assert "a password" not in message
    assert "hunter2" not in message


def test_exposed_redis_with_tls_but_no_password_is_refused() -> None:
    message = problems(redis_url="rediss://cache.example:6380/0")
    assert "a password" in message
    assert "TLS (" not in message


def test_exposed_redis_with_tls_and_password_is_accepted(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret")
    assert problems(redis_url="rediss://:s3cret@cache.example:6380/0") == ""
    assert problems(redis_url="rediss://cache.example:6380/0", redis={"password": "s3cret"}) == ""
    assert problems(redis_url="rediss://cache:6380/0", redis={"password_file": str(secret)}) == ""


def test_allow_insecure_accepts_an_exposed_redis() -> None:
    assert problems(redis_url="redis://cache.example:6379/0", redis={"allow_insecure": True}) == ""


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


def test_memory_store_ignores_the_guard() -> None:
    assert problems(session_store="memory", redis_url="redis://cache.example:6379/0") == ""


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
            "GATEWAY_REDIS__REPLICA_MAX_LAG_SECONDS: Input should be greater than 0",
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
