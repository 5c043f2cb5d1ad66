"""The Storage contract, run against every backend: the in-memory store, one real redis-server, a
Sentinel-managed master (one replica, three sentinels) and a three-node Redis Cluster.

One suite proves they behave alike: values and TTLs, sliding expiry, single-use take, locks that
exclude each other, and StoreUnavailable (never "absent") when Redis is down.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from support.redis_sentinel import SentinelSet
from support.redis_server import RedisClusterNodes, RedisServer

from gateway.config.redis import RedisSettings
from gateway.errors import Busy, StoreUnavailable
from gateway.store.memory import MemoryStorage
from gateway.store.redis import RedisStorage
from gateway.store.storage import Storage


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """One server for the module: the contract tests only need a clean database each."""
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def sentinel_set() -> Iterator[SentinelSet]:
    sentinels = SentinelSet().start()
    yield sentinels
    sentinels.cleanup()


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterNodes]:
    cluster = RedisClusterNodes().start()
    yield cluster
    cluster.cleanup()


def small(**overrides: object) -> RedisSettings:
    return RedisSettings.model_validate(
        {
            "max_connections": 8,
            "socket_timeout_seconds": 1,
            "connect_timeout_seconds": 1,
            **overrides,
        }
    )


@pytest.fixture(params=["memory", "redis", "sentinel", "cluster"])
async def storage(request: pytest.FixtureRequest) -> AsyncIterator[Storage]:
    backend: Storage
    if request.param == "memory":
        backend = MemoryStorage()
    elif request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.command("FLUSHALL")
        backend = RedisStorage(server.url, small())
    elif request.param == "sentinel":
        sentinels: SentinelSet = request.getfixturevalue("sentinel_set")
        sentinels.node_at(sentinels.master_address()).command("FLUSHALL")
        backend = RedisStorage(None, small(sentinels=sentinels.addresses))
    else:
        cluster: RedisClusterNodes = request.getfixturevalue("redis_cluster")
        cluster.flush()
        backend = RedisStorage(cluster.url, small(cluster=True))
    yield backend
    await backend.close()


async def test_set_then_get_returns_the_bytes(storage: Storage) -> None:
    await storage.set("gw:test:a", b"\x00value\xff", ttl=30)
    assert await storage.get("gw:test:a") == b"\x00value\xff"
    assert await storage.get("gw:test:missing") is None


async def test_value_expires_after_its_ttl(storage: Storage) -> None:
    await storage.set("gw:test:short", b"v", ttl=0.2)
    assert await storage.get("gw:test:short") == b"v"
    await asyncio.sleep(0.35)
    assert await storage.get("gw:test:short") is None


async def test_get_with_slide_restarts_the_ttl(storage: Storage) -> None:
    await storage.set("gw:test:slide", b"v", ttl=0.4)
    for _ in range(3):
        await asyncio.sleep(0.2)
        assert await storage.get("gw:test:slide", slide_ttl=0.4) == b"v"
    await asyncio.sleep(0.6)
    assert await storage.get("gw:test:slide") is None


async def test_take_returns_the_value_once(storage: Storage) -> None:
    await storage.set("gw:test:once", b"v", ttl=30)
    results = await asyncio.gather(*(storage.take("gw:test:once") for _ in range(5)))
    assert results.count(b"v") == 1
    assert results.count(None) == 4
    assert await storage.get("gw:test:once") is None


async def test_delete_removes_every_key_named(storage: Storage) -> None:
    await storage.set("gw:test:d1", b"1", ttl=30)
    await storage.set("gw:test:d2", b"2", ttl=30)
    await storage.delete("gw:test:d1", "gw:test:d2", "gw:test:absent")
    assert await storage.get("gw:test:d1") is None
    assert await storage.get("gw:test:d2") is None


async def test_lock_admits_one_holder_at_a_time(storage: Storage) -> None:
    inside = 0
    most = 0

    async def critical() -> None:
        nonlocal inside, most
        async with storage.lock("gw:lock:test", ttl=5, wait=5):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(critical() for _ in range(10)))
    assert most == 1


async def test_lock_is_released_after_an_error(storage: Storage) -> None:
    with pytest.raises(RuntimeError):
        async with storage.lock("gw:lock:error", ttl=5, wait=5):
            raise RuntimeError("boom")
    async with asyncio.timeout(1):
        async with storage.lock("gw:lock:error", ttl=5, wait=5):
            pass


async def test_ping_succeeds_when_the_store_is_up(storage: Storage) -> None:
    await storage.ping()


def test_memory_store_sweep_drops_expired_entries() -> None:
    clock = FakeClock()
    store = MemoryStorage(clock)
    asyncio.run(store.set("a", b"1", ttl=10))
    asyncio.run(store.set("b", b"2", ttl=100))
    clock.now += 50
    assert store.sweep() == 1
    assert len(store) == 1


async def test_redis_lock_excludes_other_processes_and_is_renewed(
    redis_server: RedisServer,
) -> None:
    """Two RedisStorage objects stand for two replicas; the lock outlives its initial TTL while
    the holder works, and the other replica waits."""
    first = RedisStorage(redis_server.url, small(max_connections=4))
    second = RedisStorage(redis_server.url, small(max_connections=4))
    order: list[str] = []

    async def hold() -> None:
        async with first.lock("gw:lock:replicas", ttl=0.3, wait=5):
            order.append("first in")
            await asyncio.sleep(0.8)  # longer than the TTL: renewal must keep it
            order.append("first out")

    async def wait_then_take() -> None:
        await asyncio.sleep(0.05)
        async with second.lock("gw:lock:replicas", ttl=2, wait=5):
            order.append("second in")

    try:
        await asyncio.gather(hold(), wait_then_take())
    finally:
        await first.close()
        await second.close()
    assert order == ["first in", "first out", "second in"]


async def test_redis_down_is_store_unavailable_not_absent() -> None:
    server = RedisServer().start()
    storage = RedisStorage(
        server.url,
        small(max_connections=4, socket_timeout_seconds=0.5, connect_timeout_seconds=0.5),
    )
    try:
        await storage.set("gw:test:k", b"v", ttl=30)
        server.stop()
        for call in (
            storage.get("gw:test:k"),
            storage.set("gw:test:k", b"v", ttl=30),
            storage.take("gw:test:k"),
            storage.delete("gw:test:k"),
            storage.ping(),
        ):
            with pytest.raises(StoreUnavailable):
                await call
    finally:
        await storage.close()
        server.cleanup()


async def test_lock_wait_is_bounded(storage: Storage) -> None:
    async with storage.lock("gw:lock:busy", ttl=5, wait=5):
        with pytest.raises(Busy):
            async with storage.lock("gw:lock:busy", ttl=5, wait=0.2):
                pass


async def test_replace_writes_only_over_the_expected_value(storage: Storage) -> None:
    assert await storage.replace("gw:test:cas", None, b"one", ttl=30)
    assert not await storage.replace("gw:test:cas", None, b"two", ttl=30)
    assert not await storage.replace("gw:test:cas", b"stale", b"two", ttl=30)
    assert await storage.replace("gw:test:cas", b"one", b"two", ttl=30)
    assert await storage.get("gw:test:cas") == b"two"
