"""Building the Redis client for each shape the settings name (one server, a master found
through Sentinel, a Cluster), with TLS, credentials and bounded pools, and the watcher that keeps
a Sentinel client on the current master. What these clients are used for is store/redis.py's
business; why the watcher exists is explained there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any, Final, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.credentials import CredentialProvider
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    RedisError,
)

from gateway.config.redis import RedisSettings
from gateway.errors import StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

_FAILURES: Final = (RedisError, OSError, TimeoutError)
HEALTH_CHECK_SECONDS: Final = 30
MASTER_CHECK_SECONDS: Final = 1.0
RECHECK_SECONDS: Final = 0.1  # a burst of failing calls shares one look at the sentinels


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


def _flags(state: dict[str, Any]) -> set[str]:
    flags = state.get("flags", "")
    return set(flags.split(",")) if isinstance(flags, str) else set(flags)


def _address(master: dict[str, Any]) -> tuple[str, int]:
    return str(master["ip"]), int(master["port"])


def _epoch(master: dict[str, Any]) -> int:
    return int(master.get("config-epoch", 0))


def _serving(master: dict[str, Any]) -> bool:
    """The sentinel's master is up and it is not failing it over. `disconnected` alone is not
    down: the sentinels' links to a just-promoted master show it for a moment."""
    flags = _flags(master)
    return "master" in flags and not flags & {"s_down", "o_down", "failover_in_progress"}


def _in_sync(replica: dict[str, Any]) -> bool:
    """A replica that can confirm writes: reachable, a replica by its own account, linked up."""
    return (
        not _flags(replica) & {"s_down", "o_down", "disconnected"}
        and replica.get("role-reported") == "slave"
        and replica.get("master-link-status") == "ok"
    )


class _Sentinel(Sentinel):
    """Asks every sentinel and believes the highest configuration epoch, as the sentinels do.

    redis-py asks one sentinel after another and takes the first plausible answer, so in the
    seconds after a failover a sentinel that has not heard of it yet sends connections to the
    demoted master. It also reorders its list by swapping slots across awaits, which concurrent
    discoveries (every connection re-dialling in a failover) turn into a duplicated sentinel and a
    dropped one (seen in the tests; compare redis/redis-py#4331). Nothing here reorders the list.
    """

    async def views(
        self, name: str, *, replicas: bool
    ) -> tuple[list[tuple[dict[str, Any], list[dict[str, Any]]]], list[str]]:
        """Each answering sentinel's state of master `name` (and of its replicas, if asked), and
        a note on each sentinel that did not answer."""

        async def ask(client: Redis) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            master = await client.sentinel_master(name)
            found = await client.sentinel_slaves(name) if replicas else []
            if not isinstance(master, dict):
                raise RedisConnectionError("unexpected SENTINEL MASTER reply")
            return master, list(found)

        clients = list(self.sentinels)
        answers = await asyncio.gather(*(ask(c) for c in clients), return_exceptions=True)
        views, notes = [], []
        for client, answer in zip(clients, answers, strict=True):
            if isinstance(answer, _FAILURES):
                where = "{host}:{port}".format(**client.connection_pool.connection_kwargs)
                notes.append(f"{where} {type(answer).__name__}")  # never the text: no secrets
            elif isinstance(answer, BaseException):
                raise answer
            else:
                views.append(answer)
        return views, notes

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        views, notes = await self.views(service_name, replicas=False)
        usable = [m for m, _ in views if _serving(m) and self.check_master_state(m, service_name)]
        if not usable:
            notes.append(f"{len(views)} answered without a serving master {service_name!r}")
            raise MasterNotFoundError("no Redis master from the sentinels: " + "; ".join(notes))
        return _address(max(usable, key=_epoch))


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Connections to the current master that, like BlockingConnectionPool, wait for a free one
    rather than fail when all are busy (PERF.md).

    No connection to a former master is handed out: when the pool moves to a new master (the
    watch, or redis-py itself when it opens a connection), a connection that was busy at that
    moment comes back still connected to the old one, which keeps acting as a master until the
    sentinels demote it; writes there would be confirmed and then lost. So every connection is
    checked against the current master as it leaves the pool."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        connection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        current = self.master_address
        if (
            current is not None
            and connection.is_connected
            and (connection.host, connection.port) != current
        ):
            # Reconnect now, through the sentinels: a connection merely closed would reconnect
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


class MasterWatch:
    """Sentinel mode: keeps the pool on the master the sentinels name, and knows how many replicas
    can confirm a write right now."""

    def __init__(self, sentinel: _Sentinel, pool: SentinelConnectionPool, name: str, wanted: int):
        self.sentinel_client = sentinel
        self._pool = pool
        self._name = name
        self._wanted = wanted
        self.acks = wanted  # strict until the sentinels have answered
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def poke(self) -> None:
        self._poked.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def current(self) -> tuple[str, int] | None:
        """The master the pool's connections go to."""
        return self._pool.master_address

    async def _run(self) -> None:
        while True:
            self._poked.clear()
            try:
                await self.check()
            except Exception:  # the watch must outlive any one failed check
                log.warning("checking the Redis master failed; trying again", exc_info=True)
            await asyncio.sleep(RECHECK_SECONDS)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(MASTER_CHECK_SECONDS - RECHECK_SECONDS):
                    await self._poked.wait()

    async def check(self) -> None:
        views, _ = await self.sentinel_client.views(self._name, replicas=True)
        serving = [view for view in views if _serving(view[0])]
        if not serving or any("failover_in_progress" in _flags(m) for m, _ in views):
            self.acks = self._wanted  # the master is down or being replaced: stay strict
            return
        master, replicas = max(serving, key=lambda view: _epoch(view[0]))
        self._follow(_address(master))
        unanimous = len(views) == len(self.sentinel_client.sentinels) and all(
            _address(m) == _address(master) for m, _ in views
        )
        if not unanimous and any(r.get("role-reported") == "master" for r in replicas):
            # A replica calls itself master: the old master awaiting demotion after a failover,
            # or a promotion this sentinel has not heard of yet, whose writes would be lost.
            # Only when every sentinel names this master is it surely the former.
            self.acks = self._wanted
            return
        self.acks = min(self._wanted, sum(1 for replica in replicas if _in_sync(replica)))

    def _follow(self, address: tuple[str, int]) -> None:
        previous = self._pool.master_address
        if previous is None or previous == address:
            return
        log.warning(
            "the sentinels name a new Redis master %s:%s (was %s:%s); reconnecting",
            *address,
            *previous,
        )
        # The pool reconnects every connection to the old master as it next hands it out.
        self._pool.master_address = address


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


def sentinel_client(s: RedisSettings) -> tuple[_Sentinel, _BlockingSentinelPool]:
    tls = {"ssl": True, **_tls(s)} if s.tls else {}
    password = s.sentinel_password.get_secret_value() if s.sentinel_password else None
    sentinel = _Sentinel(
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
