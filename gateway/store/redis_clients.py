"""Building the Redis client for each shape the settings name (one server, a master found
through Sentinel, a Cluster), with TLS, credentials and bounded pools. What these clients are used
for is store/redis.py's business; which master a Sentinel pool goes to is store/master_watch.py's.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Final

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.credentials import CredentialProvider

from gateway.config.redis import RedisSettings
from gateway.errors import StoreUnavailable
from gateway.store.master_watch import Address, Sentinels

HEALTH_CHECK_SECONDS: Final = 30


class _PasswordFile(CredentialProvider):
    """The password read from its file for each new connection: a rotated secret (a re-mounted
    Kubernetes Secret) is used without a restart, while open connections stay signed in."""

    def __init__(self, username: str | None, path: Path) -> None:
        self._username = username
        self._path = path

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        password = self._path.read_text(encoding="utf-8").strip()
        return (password,) if self._username is None else (self._username, password)

    async def get_credentials_async(self) -> tuple[str] | tuple[str, str]:
        return await asyncio.to_thread(self.get_credentials)


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Connections to the current master that, like BlockingConnectionPool, wait for a free one
    rather than fail when all are busy (PERF.md).

    Only the first connection asks the sentinels where the master is; from then on the watch
    (store/master_watch.py) alone moves the pool. redis-py asks again for every connection it
    (re)opens and takes the answer, which can move the pool back to a replaced master while the
    one sentinel that knows of the promotion is slow to answer.

    No connection to a former master is handed out: when the pool moves to a new master, a
    connection that was busy at that moment comes back still connected to the old one, which
    keeps acting as a master until the sentinels demote it; writes there would be confirmed and
    then lost. So every connection is checked against the current master as it leaves the
    pool."""

    async def get_master_address(self) -> Address:
        current: Address | None = self.master_address
        if current is not None:
            return current
        address: Address = await super().get_master_address()  # type: ignore[no-untyped-call]
        return address

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        connection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        current = self.master_address
        if (
            current is not None
            and connection.is_connected
            and (connection.host, connection.port) != current
        ):
            # Reconnect now, to the current master: a connection merely closed would reconnect
            # on its next command to the address it remembers, the old master.
            try:
                await connection.disconnect()
                await connection.connect()
            except BaseException:
                await self.release(connection)
                raise
        return connection


class CallLimit:
    """At most `size` calls in flight, each waiting up to `wait` seconds for its turn: RedisCluster
    fails at its per-node connection limit where a BlockingConnectionPool would wait."""

    def __init__(self, size: int, wait: float) -> None:
        self._free = asyncio.Semaphore(size)
        self._wait = wait

    async def __aenter__(self) -> None:
        try:
            async with asyncio.timeout(self._wait):
                await self._free.acquire()
        except TimeoutError as exc:
            raise StoreUnavailable("the session store is unreachable") from exc

    async def __aexit__(self, *exc_info: object) -> None:
        self._free.release()


def _timeouts(s: RedisSettings) -> dict[str, Any]:
    return {
        "socket_timeout": s.socket_timeout_seconds,
        "socket_connect_timeout": s.connect_timeout_seconds,
        # redis-py retries nothing: reads are retried in RedisStorage, writes never.
        "retry": Retry(NoBackoff(), 0),
    }


def _tls(s: RedisSettings) -> dict[str, Any]:
    return {
        "ssl_ca_certs": str(s.ca_file) if s.ca_file else None,
        "ssl_certfile": str(s.cert_file) if s.cert_file else None,
        "ssl_keyfile": str(s.key_file) if s.key_file else None,
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": s.check_hostname,
    }


def _credentials(s: RedisSettings, username: str | None, password: str | None) -> dict[str, Any]:
    """Settings over the URL's user and password (the settings reject having both)."""
    username = s.username or username
    if s.password_file is not None:
        return {"credential_provider": _PasswordFile(username, s.password_file)}
    if s.password is not None:
        password = s.password.get_secret_value()
    return {"username": username, "password": password}


def standalone_client(url: str, s: RedisSettings) -> Redis:
    options: dict[str, Any] = dict(parse_url(url))
    options.update(_credentials(s, options.pop("username", None), options.pop("password", None)))
    if s.db is not None:
        options["db"] = s.db
    if s.uses_tls(url):
        options.update(connection_class=SSLConnection, **_tls(s))
    pool = BlockingConnectionPool(
        max_connections=s.max_connections,
        timeout=s.socket_timeout_seconds,  # the wait for a free connection is bounded too
        health_check_interval=HEALTH_CHECK_SECONDS,
        **{**_timeouts(s), **options},
    )
    return Redis.from_pool(pool)  # owns the pool: aclose() disconnects it


def sentinel_client(s: RedisSettings) -> tuple[Sentinels, _BlockingSentinelPool]:
    tls = {"ssl": True, **_tls(s)} if s.tls else {}
    password = s.sentinel_password.get_secret_value() if s.sentinel_password else None
    sentinel = Sentinels(
        s.sentinel_addresses, sentinel_kwargs={**_timeouts(s), "password": password, **tls}
    )
    # redis-py's asyncio Sentinel pool is not annotated.
    pool = _BlockingSentinelPool(  # type: ignore[no-untyped-call]
        s.sentinel_master,
        sentinel,
        is_master=True,
        db=s.db or 0,
        max_connections=s.max_connections,
        timeout=s.socket_timeout_seconds,
        health_check_interval=HEALTH_CHECK_SECONDS,
        **_timeouts(s),
        **_credentials(s, None, None),
        **tls,
    )
    return sentinel, pool


def cluster_client(url: str, s: RedisSettings) -> RedisCluster:
    options = parse_url(url)
    tls = {"ssl": True, **_tls(s)} if s.uses_tls(url) else {}
    return RedisCluster(
        host=options.get("host", "localhost"),
        port=options.get("port", 6379),
        max_connections=s.max_connections,
        health_check_interval=HEALTH_CHECK_SECONDS,
        **_timeouts(s),  # no cluster-level retries; MOVED and ASK are still followed
        **_credentials(s, options.get("username"), options.get("password")),
        **tls,
    )
