"""The Redis Storage backend: replicas share sessions, and sessions outlive a restart.

Three shapes, chosen by RedisSettings: one server named by GATEWAY_REDIS_URL, a master found
through Redis Sentinel, or a Redis Cluster; each over TLS (mutual, if a client certificate is set)
and with an ACL user or password. Every redis failure is translated here into StoreUnavailable:
callers answer 503 and never treat an outage as "signed out". An AUTH or ACL refusal also logs one
line naming the settings to check, never the credentials.

Sentinel failover (THREATS.md F-05, F-25). Every connection goes to the master the sentinels
name, so writes, the compare-and-set script, GETDEL and the lock never reach a replica; a READONLY
reply makes redis-py 8 drop that connection. That alone loses writes: after SENTINEL FAILOVER the
old master keeps accepting them on the connections already open for about ten seconds, until the
sentinels demote it and it resyncs from the new master (measured with a bare master_for client:
thousands of acknowledged writes gone, no error). Hence:
- a watcher (store/master_watch.py) asks all the sentinels every second, and at once after an
  error, which master is current, and follows a promoted replica as soon as it is master; the
  pool reconnects any connection to a previous master before handing it out, and the notice feed
  leaves one;
- each write waits (WAIT, on the same connection) until every replica in sync holds it
  (GATEWAY_REDIS__REPLICA_ACKS, `all` by default) before it counts, so whichever replica the
  sentinels promote has it; a write fewer replicas confirm is reported failed (it may still be
  on the master: a sign-in that gets a 503 simply did not happen). The watch says how many to
  ask for, and why that number may only fall when no failover is under way.
(Redis cannot promise more on its own: a gateway cut off with the old master and a minority of
sentinels still writes there; the watch then keeps asking for the replicas it had, and the
servers' min-replicas-to-write makes the old master refuse writes as well.)
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
from typing import Any, Final, TypeVar

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    AuthenticationError,
    MaxConnectionsError,
    NoPermissionError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.config.redis import RedisSettings
from gateway.errors import Busy, StoreUnavailable
from gateway.store.master_watch import MasterWatch
from gateway.store.redis_clients import (
    CallLimit,
    cluster_client,
    sentinel_client,
    standalone_client,
)

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
NOTICE_CHANNEL: Final = "gw:notices"
# The feed is pinged this often; silence for three periods counts as a lost feed (a connection
# can die without a reset, and a dead feed must not keep a cache trusted).
NOTICE_HEARTBEAT_SECONDS: Final = 1.0
NOTICE_RETRY_SECONDS: Final = 0.5
LOCK_POLL_SECONDS: Final = 0.02
READ_RETRIES: Final = 2
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


class RedisStorage:
    def __init__(self, url: str | None, settings: RedisSettings | None = None) -> None:
        s = settings if settings is not None else RedisSettings()
        self._sentinel: Sentinel | None = None
        self._watch: MasterWatch | None = None
        self._limit: AbstractAsyncContextManager[None] = contextlib.nullcontext()
        self._cluster = s.cluster
        self._redis: Redis | RedisCluster
        if s.sentinels:
            self._sentinel, pool = sentinel_client(s)
            self._redis = Redis.from_pool(pool)
            policy = "all" if s.replica_acks is None else s.replica_acks
            self._watch = MasterWatch(
                self._sentinel, pool, s.sentinel_master, policy, s.replica_max_lag_seconds
            )
        elif s.cluster:
            assert url is not None
            assert not s.replica_acks, "WAIT cannot follow a write to its slot's node"
            self._redis = cluster_client(url, s)
            self._limit = CallLimit(s.max_connections, s.socket_timeout_seconds)
        else:
            assert url is not None
            self._redis = standalone_client(url, s)
        assert s.replica_acks != "all" or self._watch is not None, "checked by the settings"
        self._acks = s.replica_acks if isinstance(s.replica_acks, int) else 0
        # WAIT must answer before the socket times out.
        self._wait_ms = _ms(s.socket_timeout_seconds / 2)
        self._first_check = s.socket_timeout_seconds + s.connect_timeout_seconds
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
            await self._drop_idle(exc)
            raise self._unavailable(exc) from exc

    async def _write(self, *command: Any) -> Any:
        """One write, confirmed by as many replicas as required now (WAIT on the same connection,
        so it covers this write). Never retried: whether a failed one was applied is unknown."""
        acks = await self._required_acks()
        try:
            async with self._limit:
                if not acks:
                    return await self._redis.execute_command(*command)
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.execute_command(*command)
                    pipe.execute_command("WAIT", acks, self._wait_ms)
                    result, confirmed = await pipe.execute()
        except _FAILURES as exc:
            await self._drop_idle(exc)
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

    async def _required_acks(self) -> int:
        if self._watch is None:
            return self._acks
        self._watch.start()
        if self._watch.acks is None:  # the watch has not looked yet, or found no master
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._first_check):
                    await self._watch.checked()
        acks = self._watch.acks
        if acks is None:
            raise StoreUnavailable("the session store is unreachable")
        return acks

    def _watching(self) -> None:
        if self._watch is not None:
            self._watch.start()

    async def _drop_idle(self, error: BaseException) -> None:
        """After a lost connection, close the idle ones too: a restarted Redis closed them all,
        and the first write to use one would fail (writes are never retried), so the first
        sign-in after a recovery would be a 503."""
        if not isinstance(self._redis, Redis) or not isinstance(error, RedisConnectionError):
            return  # a cluster client manages its nodes' connections itself
        with contextlib.suppress(*_FAILURES):
            await self._redis.connection_pool.disconnect(inuse_connections=False)

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
                "GET GETEX SET GETDEL DEL EVAL WAIT PING on keys gw:*, and INFO with sentinels",
            )
        elif isinstance(error, ResponseError) and str(error).startswith("NOREPLICAS"):
            # The servers' own guard (min-replicas-to-write): a master left without a replica in
            # sync, after a failover until the old master rejoins, or cut off from its replicas.
            self._log(
                "noreplicas",
                logging.WARNING,
                "the Redis master refuses writes: fewer replicas in sync than its "
                "min-replicas-to-write",
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

    async def publish(self, message: str) -> None:
        self._watching()
        try:
            async with self._limit:
                await self._redis.publish(NOTICE_CHANNEL, message)
        except _FAILURES as exc:
            raise self._unavailable(exc) from exc

    async def follow(
        self, on_notice: Callable[[str], None], on_state: Callable[[bool], None]
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._watching()
            pubsub = self._redis.pubsub()
            up = False
            try:
                await pubsub.subscribe(NOTICE_CHANNEL)
                heard = pinged = loop.time()
                while True:
                    message = await pubsub.get_message(timeout=NOTICE_HEARTBEAT_SECONDS / 2)
                    now = loop.time()
                    if message is not None:
                        heard = now
                        if message["type"] == "message":
                            on_notice(message["data"].decode("ascii", "replace"))
                        elif message["type"] == "subscribe" and not up:
                            up = True
                            on_state(True)
                    if now - pinged >= NOTICE_HEARTBEAT_SECONDS:
                        pinged = now
                        self._same_master(pubsub)
                        await pubsub.ping()
                    if now - heard > 3 * NOTICE_HEARTBEAT_SECONDS:
                        raise TimeoutError("the notice feed fell silent")
            except _FAILURES as exc:
                self._log("notices", logging.WARNING, "the Redis notice feed was lost: %r", exc)
                if self._watch is not None:
                    self._watch.poke()
            finally:
                if up:
                    on_state(False)
                with contextlib.suppress(*_FAILURES):
                    await pubsub.aclose()
            await asyncio.sleep(NOTICE_RETRY_SECONDS)

    def _same_master(self, pubsub: Any) -> None:
        """After a failover the old master stays alive, answering PINGs, until it is demoted;
        notices are published on the new one. A feed left there would hear nothing while it
        seems up, so it must move (and count as lost: notices may have been missed)."""
        if self._watch is None:
            return
        current = self._watch.current()
        connection = pubsub.connection
        if (
            current is not None
            and connection is not None
            and (connection.host, connection.port) != current
        ):
            raise RedisConnectionError("the notice feed is on a former Redis master")

    async def close(self) -> None:
        if self._watch is not None:
            await self._watch.stop()
        await self._redis.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()
