"""Sentinel failover with two replicas (issue 14): nothing confirmed is lost, and writes succeed
again soon after the promotion (bench/failover.py measures how soon: within a second). Each test
runs three data nodes (a master and two replicas, with the Redis settings docs/operations.md asks
operators for) and three sentinels of its own (down-after 1 s) on loopback;
tests/support/failover.py drives the load and measures.
bench/failover.py runs the same scenarios many times and prints the figures.

What these tests caught on the code before them (a one-replica confirmation, WAIT 1, and a watch
that followed only the sentinels' final switch):
- every SENTINEL FAILOVER lost about 600 of some 10,000 writes reported done: confirmed on the
  old master by the replica that was not promoted, which then resynchronised from the promoted
  one and dropped them;
- after a kill -9, writes the replica that was promoted had not received were lost when the
  sentinels promoted the replica behind (here forced by its replica-priority; in the issue's
  runs by offsets the sentinels had read before the master died);
- writes stayed refused ("could not confirm a write") until the sentinels' switch, 1.1 to 1.3 s
  after the promotion here and 5 s with Redis's default repl-diskless-sync-delay: the leader
  switches only once the other replica has resynchronised in full.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from support.browser import Browser
from support.failover import OPERATOR_NODE_ARGS, Gateways, PromotionClock, missing, through
from support.fixtures import Launch
from support.gateway import PUBLIC_URL, idp_ssl
from support.redis_sentinel import SentinelSet

from gateway.config.redis import RedisSettings
from gateway.errors import StoreUnavailable
from gateway.store.redis import RedisStorage

pytestmark = pytest.mark.threat("F-05")

FAST = {"max_connections": 16, "socket_timeout_seconds": 1, "connect_timeout_seconds": 1}
# Writes and sign-ins must come back after a promotion, and within the sentinels' failover
# timeout (5 s here), whatever else the machine is doing. The target, back within 1 s of
# the promotion, is a performance figure: bench/failover.py measures it over many runs and prints
# PASS/FAIL (a timed assertion here failed once in a loaded run with two promotions, at 1.8 s).
BACK_WITHIN_SECONDS = 5.0


@pytest.fixture
def two_replicas() -> Iterator[SentinelSet]:
    """A deployment per test: the sentinels refuse a second failover of one master soon after."""
    deployment = SentinelSet(replicas=2, node_args=OPERATOR_NODE_ARGS).start()
    yield deployment
    deployment.cleanup()


@pytest.fixture
async def storage(two_replicas: SentinelSet) -> AsyncIterator[RedisStorage]:
    store = RedisStorage(
        None, RedisSettings.model_validate({**FAST, "sentinels": two_replicas.addresses})
    )
    yield store
    await store.close()


async def test_sentinel_failover_loses_no_confirmed_write_and_writes_come_back(
    two_replicas: SentinelSet, storage: RedisStorage
) -> None:
    run = await through(two_replicas, "failover", storage)
    print("\n" + run.summary())
    assert run.lost_writes == [], (
        f"{len(run.lost_writes)} of {len(run.confirmed)} writes reported done are not on the "
        "new master"
    )
    assert run.writes.succeeded_after(run.promoted), "no write succeeded after the promotion"
    refused = run.writes.refused_after(run.promotions)
    assert refused is not None and refused < BACK_WITHIN_SECONDS, run.summary()


@pytest.mark.parametrize("attempt", [1, 2])
async def test_killed_master_under_sign_in_churn_loses_no_session(
    attempt: int, launch: Launch, idp: Any, two_replicas: SentinelSet, storage: RedisStorage
) -> None:
    """The issue's scenario, quick form: two gateways, signed-in traffic, sign-in and sign-out
    churn and direct writes, then kill -9 of the master. Every sign-in that completed still works
    on both gateways afterwards, and sign-ins and writes succeed again after the promotion."""
    shared: dict[str, Any] = {
        "session_store": "redis",
        "cookie_secret": secrets.token_urlsafe(32),
        "redis": {**FAST, "sentinels": two_replicas.addresses},
        # Every simulated browser comes from 127.0.0.1.
        "signin": {"max_starts_per_minute": 100_000},
    }
    first, second = await launch(**shared), await launch(**shared)
    browsers: list[Browser] = []

    def browser(url: str) -> Browser:
        made = Browser(url, PUBLIC_URL, idp_ssl(idp.ca_path))
        browsers.append(made)
        return made

    gateways = Gateways([first.url, second.url], browser)
    try:
        run = await through(two_replicas, "kill", storage, gateways=gateways, writers=2)
    finally:
        for made in browsers:
            await made.close()
    print(f"\nrun {attempt}: {run.summary()}")
    assert run.lost_sessions == [], f"{len(run.lost_sessions)} completed sign-ins are gone"
    assert run.lost_writes == []
    for kind, attempts in (("writes", run.writes), ("sign-ins", run.sign_ins)):
        assert attempts.succeeded_after(run.promoted), f"no {kind} succeeded after the promotion"
        refused = attempts.refused_after(run.promotions)
        assert refused is not None and refused < BACK_WITHIN_SECONDS, f"{kind}: {run.summary()}"


async def test_killed_master_with_the_replica_behind_promoted_loses_no_confirmed_write() -> None:
    """One replica hangs (SIGSTOP) while writes go on, the master is killed, the replica resumes
    and is promoted (its replica-priority says so; equal priorities leave it to offsets the
    sentinels may have read before the master died). What it never received was on the master
    and the other replica only: it must not have been reported done."""
    sentinels = SentinelSet(replicas=2, node_args=OPERATOR_NODE_ARGS, priorities=(10, 100)).start()
    behind, ahead = sentinels.nodes[1], sentinels.nodes[2]
    storage = RedisStorage(
        None, RedisSettings.model_validate({**FAST, "sentinels": sentinels.addresses})
    )
    confirmed: dict[str, bytes] = {}
    stop = asyncio.Event()

    async def writer() -> None:
        # Values large enough that what the hung replica has not read overflows the kernel's
        # socket buffers: the rest waits in the master's memory and dies with it.
        while not stop.is_set():
            key, value = f"gw:session:{secrets.token_hex(8)}", secrets.token_bytes(64 * 1024)
            with contextlib.suppress(StoreUnavailable):
                await storage.set(key, value, ttl=600)
                confirmed[key] = value
            await asyncio.sleep(0.002)

    try:
        await storage.set("gw:session:warm", b"1", ttl=60)
        writers = [asyncio.create_task(writer()) for _ in range(4)]
        try:
            await asyncio.sleep(0.5)
            behind.pause()
            before = len(confirmed)
            await asyncio.sleep(1.5)
            during = len(confirmed) - before
            clock = PromotionClock(sentinels, time.monotonic())
            sentinels.node_at(clock.old).kill()
            behind.resume()
            await asyncio.to_thread(sentinels.wait_for_master_other_than, clock.old)
            clock.stop()
        finally:
            behind.resume()
            stop.set()
            await asyncio.gather(*writers, return_exceptions=True)
        assert sentinels.master_address() == behind.address, "the preferred replica was promoted"
        lost = await asyncio.to_thread(missing, sentinels, confirmed)
        print(
            f"\n{during} writes confirmed while a replica hung; {len(lost)} of "
            f"{len(confirmed)} confirmed writes lost (the other replica: "
            f"{ahead.address[1]}, promoted: {behind.address[1]})"
        )
        assert lost == []
    finally:
        await storage.close()
        sentinels.cleanup()


async def test_a_hung_replica_holds_writes_only_until_its_lag_passes_the_limit(
    two_replicas: SentinelSet,
) -> None:
    """The price of asking every replica: while one hangs (SIGSTOP: its connection stays open)
    writes wait for it, until the master's count of its lag passes
    GATEWAY_REDIS__REPLICA_MAX_LAG_SECONDS (whole seconds) and the watch has seen that for a
    second; then the other replica's confirmation suffices. Resumed, it counts again."""
    storage = RedisStorage(
        None,
        RedisSettings.model_validate(
            {**FAST, "sentinels": two_replicas.addresses, "replica_max_lag_seconds": 1}
        ),
    )
    master = two_replicas.master_address()
    hung = next(n for n in two_replicas.nodes if n.address != master)
    confirmed: list[float] = []
    try:
        await storage.set("gw:session:before", b"1", ttl=60)
        hung.pause()
        paused_at = time.monotonic()
        try:
            while time.monotonic() - paused_at < 8 and not confirmed:
                with contextlib.suppress(StoreUnavailable):
                    await storage.set(f"gw:session:{secrets.token_hex(8)}", b"v", ttl=60)
                    confirmed.append(time.monotonic() - paused_at)
                await asyncio.sleep(0.05)
        finally:
            hung.resume()
        assert confirmed, "writes never resumed while a replica hung"
        print(f"\nwrites resumed {confirmed[0]:.2f} s after a replica hung")
        # Its lag cannot pass 1 s (2 in whole seconds) before 1 s, and the watch waits a second.
        assert 1.5 < confirmed[0] < 6
        with two_replicas.node_client(master) as node:
            deadline = time.monotonic() + 10
            while node.execute_command("WAIT", 2, 100) != 2:  # the resumed replica caught up
                assert time.monotonic() < deadline
        await asyncio.sleep(1.5)  # the watch looks once a second
        other = next(n for n in two_replicas.nodes if n.address not in (master, hung.address))
        other.pause()  # now the resumed one alone cannot confirm: both are asked again
        try:
            with pytest.raises(StoreUnavailable):
                await storage.set("gw:session:after", b"v", ttl=60)
        finally:
            other.resume()
    finally:
        await storage.close()


async def test_without_info_the_replicas_the_sentinels_see_up_must_confirm(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An ACL user that may not run INFO: the master's own count of replicas in sync is out of
    reach, so the replicas the sentinels see up stand in (never fewer confirmations), and the
    log says what to allow."""
    password = "acl-Pa55-" + secrets.token_hex(8)
    user = ("--user", "gateway", "on", f">{password}", "~gw:*", "+@all", "-info")
    sentinels = SentinelSet(replicas=2, node_args=(*OPERATOR_NODE_ARGS, *user)).start()
    settings = {**FAST, "sentinels": sentinels.addresses, "username": "gateway"}
    storage = RedisStorage(None, RedisSettings.model_validate({**settings, "password": password}))
    try:
        await storage.set("gw:session:one", b"1", ttl=60)
        replica = next(n for n in sentinels.nodes if n.address != sentinels.master_address())
        replica.pause()
        try:
            with pytest.raises(StoreUnavailable):
                await storage.set("gw:session:two", b"2", ttl=60)
        finally:
            replica.resume()
    finally:
        await storage.close()
        sentinels.cleanup()
    assert "may not run INFO" in caplog.text and "allow INFO (+info)" in caplog.text
