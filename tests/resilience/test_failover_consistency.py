"""Regression tests for what the soak (bench/soak.py) found after a Sentinel failover, each
from connections that stay on the old master, which after SENTINEL FAILOVER (a planned switch:
the old master is alive) keeps answering as a master until the sentinels demote it, about eight
seconds later (they wait four publish periods before reconfiguring an instance that still
reports itself master).

1. A sign-out on one replica does not reach another replica's session cache. The notice feed
   (RedisStorage.follow) holds its pub/sub connection as long as it works, and MasterWatch does
   not retire it: it stays subscribed on the old master. Every replica publishes its notices on
   the new master, the old one does not replicate from it yet, and the feed's heartbeat PINGs
   still succeed, so the feed counts as up (`SessionCache.following`) while it hears nothing. The
   cache keeps serving records deleted or replaced elsewhere, each for up to
   GATEWAY_SESSION__CACHE_SECONDS, against sessions/cache.py's contract ("while the notice feed is
   down ... the cache is bypassed"; a revoked session stops working everywhere "within
   milliseconds while the feed is up"). The feed moves only when the demotion drops it.
2. Writes reported done are lost: see the second test.

Both are fixed (store/redis.py moves the feed off a former master and counts it as lost;
store/redis_clients.py reconnects any connection to a former master before handing it out), and
these tests keep them fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Iterator
from typing import Any, Final

import pytest
from redis.asyncio import Redis
from support.browser import API
from support.fixtures import Launch, Running
from support.gateway import SESSION_COOKIE
from support.redis_sentinel import SentinelSet

from gateway.config.redis import RedisSettings
from gateway.errors import StoreUnavailable
from gateway.keys import SESSIONS
from gateway.store.redis import RedisStorage

FAST = {"max_connections": 16, "socket_timeout_seconds": 1, "connect_timeout_seconds": 1}


@pytest.fixture
def sentinels() -> Iterator[SentinelSet]:
    """A deployment of its own: the sentinels refuse a second failover of one master soon after."""
    deployment = SentinelSet().start()
    yield deployment
    deployment.cleanup()


async def sign_in(gateway: Running, seconds: float = 10) -> str:
    """The real sign-in, retried while the store answers 503 (right after a failover)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            response = await gateway.browser.sign_in("/")
        except AssertionError:
            response = None
        cookie = gateway.browser.cookie(SESSION_COOKIE)
        if response is not None and response.status == 302 and cookie is not None:
            return cookie
        assert time.monotonic() < deadline, "no sign-in succeeded"
        await asyncio.sleep(0.2)


async def signed_out_elsewhere(first: Running, second: Running) -> int:
    """Sign in on `first`, use the session on `second` (which caches the record), sign out on
    `first`; what `second` answers for the session a moment later."""
    cookie = await sign_in(first)
    second.browser.jar.update_cookies({SESSION_COOKIE: cookie}, second.browser.jar_origin())
    # Right after a failover `second` may still read from the old master for a moment (its watch
    # looks at the sentinels once a second) and not find the new session there.
    deadline = time.monotonic() + 5
    while (await second.browser.get("/before", headers=API)).status != 200:
        assert time.monotonic() < deadline, "the second replica never read the session"
        await asyncio.sleep(0.1)
    assert (await first.browser.get("/.auth/logout")).status == 302
    # While the feed is up a notice arrives within milliseconds. Right after a failover the two
    # replicas may briefly be on different masters (each watch looks at the sentinels once a
    # second, and a feed left on a former master moves at its next heartbeat, counted as lost):
    # the sign-out then reaches the other replica within that, never the cache's full lifetime.
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        await asyncio.sleep(0.1)
        status = (await second.browser.get("/after", headers=API)).status
        if status != 200 or time.monotonic() > deadline:
            return status


# A watch's look at the sentinels (1 s) plus the feed's heartbeat (1 s), with room to spare; the
# session cache alone would serve a signed-out session for GATEWAY_SESSION__CACHE_SECONDS (5 s).
SETTLE_SECONDS: Final = 3.0


def role(sentinels: SentinelSet, address: tuple[str, int]) -> str:
    with sentinels.node_client(address) as client:
        answer: Any = client.execute_command("ROLE")
    return bytes(answer[0]).decode()


@pytest.mark.threat("F-05")
async def test_sign_out_reaches_the_other_replica_right_after_a_sentinel_failover(
    launch: Launch, sentinels: SentinelSet
) -> None:
    shared: dict[str, Any] = {
        "session_store": "redis",
        "cookie_secret": secrets.token_urlsafe(32),
        "redis": {"sentinels": sentinels.addresses},
    }
    first, second = await launch(**shared), await launch(**shared)
    cache = second.app[SESSIONS].cache
    assert cache is not None
    deadline = time.monotonic() + 10
    while not cache.following:  # the feed is confirmed: the cache is in use
        assert time.monotonic() < deadline, "the notice feed never came up"
        await asyncio.sleep(0.05)
    assert await signed_out_elsewhere(first, second) == 401  # the feed works before

    old = sentinels.master_address()
    await asyncio.to_thread(sentinels.failover)
    await asyncio.to_thread(sentinels.wait_for_master_other_than, old)
    status = await signed_out_elsewhere(first, second)
    # The precondition of the window: the old master has not been demoted yet.
    old_role = role(sentinels, old)
    assert status == 401, (
        f"the other replica still accepts a signed-out session after the failover ({status}); "
        f"old master {old[0]}:{old[1]} reports {old_role!r}, the second replica's feed counts "
        f"as up: {cache.following}"
    )


@pytest.mark.threat("F-05", "F-25")
async def test_a_write_confirmed_after_a_failover_is_on_the_new_master(
    sentinels: SentinelSet,
) -> None:
    """A connection busy on the old master while the pool moves to the new one goes back to the
    pool still connected to the old master. (When this test was written, redis-py's own discovery
    moved the pool, as any new connection asked the sentinels; since issue 14 only the watch moves
    it, so the new connection here may still go to the old master, and the busy one must be
    retired either way.) The old master, alive and not yet demoted, accepts what that connection
    sends; with every sentinel naming the new master and no replica in sync yet, the watch of the
    time asked for no replica confirmation, so the write was reported done, and it was gone when
    the sentinels demoted the old master and it resynced (seen: 9 of 9 such writes readable at
    once, 0 of 9 after the demotion). For sessions: a sign-in that succeeded, then "signed out";
    for token caches, a rotated refresh token lost.

    Seen unscripted with two in-process replicas signing in on one and reading on the other right
    after a failover (fresh sessions on the old master only, read as signed out by the replica
    on the new one) in a few of about twenty runs; here the busy connection is held on purpose,
    so it happens every time."""
    storage = RedisStorage(
        None, RedisSettings.model_validate({**FAST, "sentinels": sentinels.addresses})
    )
    try:
        client = storage._redis
        assert isinstance(client, Redis)
        pool = client.connection_pool  # shared by redis-py's discovery and the watch
        # A command in flight on the old master...
        busy = await pool.get_connection()  # type: ignore[no-untyped-call]
        old = sentinels.master_address()
        await asyncio.to_thread(sentinels.failover)
        await asyncio.to_thread(sentinels.wait_for_master_other_than, old)
        # ...while a new connection asks the sentinels and moves the pool to the new master.
        fresh = await pool.get_connection()  # type: ignore[no-untyped-call]
        await pool.release(fresh)
        await pool.release(busy)
        confirmed: list[str] = []
        for n in range(30):
            key = f"gw:session:after-failover-{n}"
            with contextlib.suppress(StoreUnavailable):
                await storage.set(key, b"confirmed", ttl=300)
                confirmed.append(key)
            await asyncio.sleep(0.05)
        assert confirmed, "no write succeeded after the failover"
        new = sentinels.master_address()
        with sentinels.node_client(new) as node:
            missing = [k for k, v in zip(confirmed, node.mget(confirmed), strict=True) if v is None]
        with sentinels.node_client(old) as node:
            on_old = sum(1 for v in node.mget(missing or ["-"]) if v is not None)
        assert not missing, (
            f"{len(missing)} of {len(confirmed)} writes reported done after the failover are not "
            f"on the new master {new[0]}:{new[1]}; {on_old} of them are on the old one "
            f"{old[0]}:{old[1]}, which reports {role(sentinels, old)!r} until it is demoted"
        )
    finally:
        await storage.close()
