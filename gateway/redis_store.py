"""The Redis Storage backend: replicas share sessions, and sessions outlive a restart.

Three shapes, chosen by RedisSettings: one server named by GATEWAY_REDIS_URL, a master found
through Redis Sentinel, or a Redis Cluster; each over TLS (mutual, if a client certificate is set)
and with an ACL user or password. Every redis failure is translated here into StoreUnavailable:
callers answer 503 and never treat an outage as "signed out". An AUTH or ACL refusal also logs one
line naming the settings to check, never the credentials.

Sentinel failover (THREATS.md F-05, F-25). Every connection goes to the master the sentinels name,
so writes, the compare-and-set script, GETDEL and the lock never reach a replica; a READONLY reply
makes redis-py 8 drop that connection and ask the sentinels on the next connect. That alone loses
writes: after SENTINEL FAILOVER the old master keeps accepting them on the connections already
open for about ten seconds, until the sentinels demote it and it resyncs from the new master
(measured with a bare master_for client: thousands of acknowledged writes gone, no error). Hence:
- a watcher asks all the sentinels every second, and at once after an error, which master is
  current (the highest configuration epoch wins, as among the sentinels), and retires every
  connection to a previous one; new connections are routed the same way;
- each write waits (WAIT, on the same connection) until a replica holds it before it counts, so a
  write the promoted replica never saw fails instead of vanishing. Once the sentinels agree that
  fewer healthy replicas are left than required (the old master was killed), fewer confirmations
  are asked for: waiting for a replica that is not there would refuse every write. During a
  failover, or while a replica calls itself master and the sentinels disagree, nothing is relaxed.
  (Redis cannot promise more: a gateway cut off with the old master and a minority of sentinels
  can still be told too little; the servers' min-replicas-to-write guards that case.)
Locks and GETEX's sliding expiry are not confirmed: a lost lock only costs a repeated refresh,
whose save is compare-and-set anyway, and a lost slide only an earlier idle expiry.

Cluster. Every operation names one key and each Lua script takes exactly one (KEYS[1]), so no
command can span slots (CROSSSLOT); `delete` of several keys is sent key by key. Keys are
hash-tagged on their digest (gw:session:{<hex>}), so one session's record, token cache and refresh
lock share a slot. Cluster failover is redis-py's: a failed call is StoreUnavailable and the next
one reloads the slot map; writes are not replica-confirmed there.

Retries. Reads (GET, GETEX, PING) are retried twice, with a short backoff, after a dropped or
refused connection; writes never are, since whether they were applied is unknown. Locks are a
SET NX PX token renewed while held and released only by their owner (compare-and-delete), layered
over an in-process lock so one process sends one contender.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.credentials import CredentialProvider
from redis.exceptions import (
    AuthenticationError,
    MaxConnectionsError,
    NoPermissionError,
    ReadOnlyError,
    RedisError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.errors import Busy, StoreUnavailable
from gateway.redis_settings import RedisSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

_FAILURES: Final = (RedisError, OSError, TimeoutError)
_RELEASE: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_RENEW: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
_REPLACE: Final = """
local current = redis.call('get', KEYS[1])
if (ARGV[1] == '0' and current == false) or (ARGV[1] == '1' and current == ARGV[2]) then
  redis.call('set', KEYS[1], ARGV[3], 'PX', ARGV[4])
  return 1
end
return 0
"""
LOCK_POLL_SECONDS: Final = 0.02
READ_RETRIES: Final = 2
HEALTH_CHECK_SECONDS: Final = 30
MASTER_CHECK_SECONDS: Final = 1.0
RECHECK_SECONDS: Final = 0.1  # a burst of failing calls shares one look at the sentinels
LOG_EVERY_SECONDS: Final = 10.0


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _hash_tagged(key: str) -> str:
    prefix, colon, digest = key.rpartition(":")
    return f"{prefix}{colon}{{{digest}}}"


def _transient(error: Exception) -> bool:
    """A dropped or refused connection is worth another try. Refused credentials are not, nor an
    exhausted pool: waiting for it already took the time a retry would add."""
    if isinstance(error, AuthenticationError | MaxConnectionsError):
        return False
    return not isinstance(error.__cause__, TimeoutError)


async def _no_cleanup(error: Exception) -> None:
    """redis-py has already dropped the failed connection."""


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
    rather than fail when all are busy (PERF.md)."""


class _CallLimit:
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


class _MasterWatch:
    """Sentinel mode: keeps the pool on the master the sentinels name, and knows how many replicas
    can confirm a write right now."""

    def __init__(self, sentinel: _Sentinel, pool: SentinelConnectionPool, name: str, wanted: int):
        self._sentinel = sentinel
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

    async def _run(self) -> None:
        while True:
            self._poked.clear()
            await self.check()
            await asyncio.sleep(RECHECK_SECONDS)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(MASTER_CHECK_SECONDS - RECHECK_SECONDS):
                    await self._poked.wait()

    async def check(self) -> None:
        views, _ = await self._sentinel.views(self._name, replicas=True)
        serving = [view for view in views if _serving(view[0])]
        if not serving or any("failover_in_progress" in _flags(m) for m, _ in views):
            self.acks = self._wanted  # the master is down or being replaced: stay strict
            return
        master, replicas = max(serving, key=lambda view: _epoch(view[0]))
        await self._follow(_address(master))
        unanimous = len(views) == len(self._sentinel.sentinels) and all(
            _address(m) == _address(master) for m, _ in views
        )
        if not unanimous and any(r.get("role-reported") == "master" for r in replicas):
            # A replica calls itself master: the old master awaiting demotion after a failover,
            # or a promotion this sentinel has not heard of yet, whose writes would be lost.
            # Only when every sentinel names this master is it surely the former.
            self.acks = self._wanted
            return
        self.acks = min(self._wanted, sum(1 for replica in replicas if _in_sync(replica)))

    async def _follow(self, address: tuple[str, int]) -> None:
        previous = self._pool.master_address
        if previous is None or previous == address:
            return
        log.warning(
            "the sentinels name a new Redis master %s:%s (was %s:%s); reconnecting",
            *address,
            *previous,
        )
        self._pool.master_address = address
        # Idle connections close now, busy ones when their command returns (a write there fails
        # its WAIT): none to the old master is handed out again.
        await self._pool.update_active_connections_for_reconnect()  # type: ignore[no-untyped-call]
        await self._pool.disconnect(inuse_connections=False)


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


def _standalone(url: str, s: RedisSettings) -> Redis:
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


def _sentinel(s: RedisSettings) -> tuple[_Sentinel, _BlockingSentinelPool]:
    tls = {"ssl": True, **_tls(s)} if s.tls else {}
    password = s.sentinel_password.get_secret_value() if s.sentinel_password else None
    # redis-py's asyncio Sentinel and its pool are not annotated.
    sentinel = _Sentinel(  # type: ignore[no-untyped-call]
        s.sentinel_addresses, sentinel_kwargs={**_timeouts(s), "password": password, **tls}
    )
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


def _cluster(url: str, s: RedisSettings) -> RedisCluster:
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


class RedisStorage:
    def __init__(self, url: str | None, settings: RedisSettings | None = None) -> None:
        s = settings if settings is not None else RedisSettings()
        self._sentinel: Sentinel | None = None
        self._watch: _MasterWatch | None = None
        self._limit: AbstractAsyncContextManager[None] = contextlib.nullcontext()
        self._cluster = s.cluster
        self._redis: Redis | RedisCluster
        if s.sentinels:
            self._sentinel, pool = _sentinel(s)
            self._redis = Redis.from_pool(pool)
            wanted = 1 if s.replica_acks is None else s.replica_acks
            self._watch = _MasterWatch(self._sentinel, pool, s.sentinel_master, wanted)
        elif s.cluster:
            assert url is not None
            assert not s.replica_acks, "WAIT cannot follow a write to its slot's node"
            self._redis = _cluster(url, s)
            self._limit = _CallLimit(s.max_connections, s.socket_timeout_seconds)
        else:
            assert url is not None
            self._redis = _standalone(url, s)
        self._acks = s.replica_acks or 0
        # WAIT must answer before the socket times out.
        self._wait_ms = _ms(s.socket_timeout_seconds / 2)
        self._retry = Retry(
            ExponentialBackoff(cap=s.socket_timeout_seconds / 10, base=0.01),
            READ_RETRIES,
            supported_errors=(RedisConnectionError,),
        )
        self._local_locks: dict[str, asyncio.Lock] = {}
        self._local_users: dict[str, int] = {}  # holders and waiters of each local lock
        self._logged_at: dict[str, float] = {}

    def _key(self, key: str) -> str:
        return _hash_tagged(key) if self._cluster else key

    async def get(self, key: str, *, slide_ttl: float | None = None) -> bytes | None:
        name = self._key(key)
        if slide_ttl is None:
            value = await self._read(lambda: self._redis.get(name))
        else:
            px = _ms(slide_ttl)
            value = await self._read(lambda: self._redis.getex(name, px=px))
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self._write("SET", self._key(key), value, "PX", _ms(ttl))

    async def replace(self, key: str, expected: bytes | None, value: bytes, ttl: float) -> bool:
        flag, current = ("0", b"") if expected is None else ("1", expected)
        name = self._key(key)
        done = await self._write("EVAL", _REPLACE, 1, name, flag, current, value, _ms(ttl))
        return bool(done)

    async def take(self, key: str) -> bytes | None:
        value = await self._write("GETDEL", self._key(key))
        return value if isinstance(value, bytes) else None

    async def delete(self, *keys: str) -> None:
        if self._cluster:
            for key in keys:  # one slot per command
                await self._write("DEL", self._key(key))
        elif keys:
            await self._write("DEL", *keys)

    async def ping(self) -> None:
        await self._read(self._redis.ping)

    async def _read(self, call: Callable[[], Awaitable[T]]) -> T:
        self._watching()
        try:
            async with self._limit:
                return await self._retry.call_with_retry(call, _no_cleanup, is_retryable=_transient)
        except _FAILURES as exc:
            raise self._unavailable(exc) from exc

    async def _write(self, *command: Any) -> Any:
        """One write, confirmed by as many replicas as required now (WAIT on the same connection,
        so it covers this write). Never retried: whether a failed one was applied is unknown."""
        self._watching()
        acks = self._acks if self._watch is None else self._watch.acks
        try:
            async with self._limit:
                if not acks:
                    return await self._redis.execute_command(*command)
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.execute_command(*command)
                    pipe.execute_command("WAIT", acks, self._wait_ms)
                    result, confirmed = await pipe.execute()
        except _FAILURES as exc:
            raise self._unavailable(exc) from exc
        if confirmed < acks:
            if self._watch is not None:
                self._watch.poke()
            self._log(
                "unconfirmed",
                logging.WARNING,
                "a Redis write was confirmed by %d of %d replicas within %d ms; reported failed",
                confirmed,
                acks,
                self._wait_ms,
            )
            raise StoreUnavailable("the session store could not confirm a write")
        return result

    def _watching(self) -> None:
        if self._watch is not None:
            self._watch.start()

    def _unavailable(self, error: BaseException) -> StoreUnavailable:
        if isinstance(error, AuthenticationError):
            self._log(
                "auth",
                logging.ERROR,
                "Redis refused the gateway's credentials (%s): check the user and password "
                "(GATEWAY_REDIS_URL, GATEWAY_REDIS__USERNAME, GATEWAY_REDIS__PASSWORD[_FILE])",
                error.status_code or "AUTH failed",
            )
        elif isinstance(error, MasterNotFoundError):
            self._log("master", logging.ERROR, "%s", error)
        elif isinstance(error, NoPermissionError):
            self._log(
                "acl",
                logging.ERROR,
                "the Redis ACL user may not run a command the gateway needs (NOPERM): allow "
                "GET GETEX SET GETDEL DEL EVAL WAIT PING on keys gw:*",
            )
        if self._watch is not None and isinstance(error, RedisConnectionError | ReadOnlyError):
            self._watch.poke()
        return StoreUnavailable("the session store is unreachable")

    def _log(self, kind: str, level: int, message: str, *args: object) -> None:
        """At most one line of each kind every LOG_EVERY_SECONDS: an outage must not flood."""
        now = time.monotonic()
        if now - self._logged_at.get(kind, -LOG_EVERY_SECONDS) >= LOG_EVERY_SECONDS:
            self._logged_at[kind] = now
            log.log(level, message, *args)

    @asynccontextmanager
    async def lock(self, name: str, ttl: float, wait: float) -> AsyncIterator[None]:
        self._watching()
        name = self._key(name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        local = self._local_locks.setdefault(name, asyncio.Lock())
        self._local_users[name] = self._local_users.get(name, 0) + 1
        try:
            try:
                await asyncio.wait_for(local.acquire(), wait)
            except TimeoutError as exc:
                raise Busy(f"lock {name} is still held after {wait:.1f}s") from exc
            try:
                token = await self._acquire(name, ttl, max(0.0, deadline - loop.time()))
                renewer = asyncio.create_task(self._keep_alive(name, token, ttl))
                try:
                    yield
                finally:
                    renewer.cancel()
                    # If Redis is unreachable the lock still expires by itself after ttl.
                    with contextlib.suppress(*_FAILURES, StoreUnavailable):
                        async with self._limit:
                            await self._redis.execute_command("EVAL", _RELEASE, 1, name, token)
            finally:
                local.release()
        finally:
            self._local_users[name] -= 1
            if not self._local_users[name]:
                # Nobody holds or waits: forget the lock so the table stays bounded.
                del self._local_users[name]
                del self._local_locks[name]

    async def _acquire(self, name: str, ttl: float, wait: float) -> str:
        token = secrets.token_hex(16)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        try:
            while True:
                async with self._limit:
                    if await self._redis.set(name, token, nx=True, px=_ms(ttl)):
                        return token
                if loop.time() >= deadline:
                    raise Busy(f"lock {name} is still held after {wait:.1f}s")
                await asyncio.sleep(LOCK_POLL_SECONDS)
        except _FAILURES as exc:
            raise self._unavailable(exc) from exc

    async def _keep_alive(self, name: str, token: str, ttl: float) -> None:
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                async with self._limit:
                    renewed = await self._redis.execute_command(
                        "EVAL", _RENEW, 1, name, token, _ms(ttl)
                    )
            except (*_FAILURES, StoreUnavailable):
                return
            if not renewed:
                return  # Lost the lock (expired and taken); the holder's writes are guarded.

    async def close(self) -> None:
        if self._watch is not None:
            await self._watch.stop()
        await self._redis.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()
