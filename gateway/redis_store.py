"""The Redis Storage backend: replicas share sessions, and sessions outlive a restart.

Every redis failure is translated here into StoreUnavailable: callers answer 503 and never treat an
outage as "signed out". Locks are a SET NX PX token renewed while held and released only by their
owner (compare-and-delete), layered over an in-process lock so one process sends one contender.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from gateway.errors import Busy, StoreUnavailable

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


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisStorage:
    def __init__(
        self,
        url: str,
        *,
        max_connections: int,
        socket_timeout: float,
        connect_timeout: float,
    ) -> None:
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            # Waiting for a free connection is bounded like any other store call.
            timeout=socket_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            health_check_interval=30,
        )
        self._redis = Redis.from_pool(pool)  # owns the pool: aclose() disconnects it
        self._local_locks: dict[str, asyncio.Lock] = {}
        self._local_users: dict[str, int] = {}  # holders and waiters of each local lock
        self._release = self._redis.register_script(_RELEASE)
        self._renew = self._redis.register_script(_RENEW)
        self._replace = self._redis.register_script(_REPLACE)

    async def get(self, key: str, *, slide_ttl: float | None = None) -> bytes | None:
        try:
            if slide_ttl is None:
                value = await self._redis.get(key)
            else:
                value = await self._redis.getex(key, px=_ms(slide_ttl))
        except (TimeoutError, RedisError, OSError) as exc:
            raise StoreUnavailable("the session store is unreachable") from exc
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        try:
            await self._redis.set(key, value, px=_ms(ttl))
        except (TimeoutError, RedisError, OSError) as exc:
            raise StoreUnavailable("the session store is unreachable") from exc

    async def replace(self, key: str, expected: bytes | None, value: bytes, ttl: float) -> bool:
        args: list[str | bytes] = ["0", b""] if expected is None else ["1", expected]
        try:
            done = await self._replace(keys=[key], args=[*args, value, _ms(ttl)])
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable("the session store is unreachable") from exc
        return bool(done)

    async def take(self, key: str) -> bytes | None:
        try:
            value = await self._redis.getdel(key)
        except (TimeoutError, RedisError, OSError) as exc:
            raise StoreUnavailable("the session store is unreachable") from exc
        return value if isinstance(value, bytes) else None

    async def delete(self, *keys: str) -> None:
        if not keys:
            return
        try:
            await self._redis.delete(*keys)
        except (TimeoutError, RedisError, OSError) as exc:
            raise StoreUnavailable("the session store is unreachable") from exc

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except (TimeoutError, RedisError, OSError) as exc:
            raise StoreUnavailable("the session store is unreachable") from exc

    @asynccontextmanager
    async def lock(self, name: str, ttl: float, wait: float) -> AsyncIterator[None]:
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
                    with contextlib.suppress(TimeoutError, RedisError, OSError):
                        await self._release(keys=[name], args=[token])
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
            while not await self._redis.set(name, token, nx=True, px=_ms(ttl)):
                if loop.time() >= deadline:
                    raise Busy(f"lock {name} is still held after {wait:.1f}s")
                await asyncio.sleep(LOCK_POLL_SECONDS)
        except (TimeoutError, RedisError, OSError) as exc:
            raise StoreUnavailable("the session store is unreachable") from exc
        return token

    async def _keep_alive(self, name: str, token: str, ttl: float) -> None:
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                if not await self._renew(keys=[name], args=[token, _ms(ttl)]):
                    return  # Lost the lock (expired and taken); the holder's writes are guarded.
            except (TimeoutError, RedisError, OSError):
                return

    async def close(self) -> None:
        await self._redis.aclose()
