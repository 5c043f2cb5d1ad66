"""A Sentinel failover under load, measured: writes straight to the store and sign-ins through
gateways while the master is failed over (SENTINEL FAILOVER) or killed (kill -9), then what was
confirmed and is gone, and how long after the promotion writes were still refused.

Used by tests/test_failover_durability.py (a few quick runs) and bench/failover.py (many runs,
figures printed). The clock that matters is the promotion: the first moment any sentinel names
another master (SENTINEL GET-MASTER-ADDR-BY-NAME names the promoted replica as soon as the
replica reports itself master), polled every PROMOTION_POLL_SECONDS from a thread.
"""

from __future__ import annotations

import asyncio
import itertools
import random  # traffic shapes, not secrets
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
import redis

from gateway.errors import StoreUnavailable
from gateway.store.redis import RedisStorage
from support.browser import Browser
from support.redis_sentinel import SentinelSet

PROMOTION_POLL_SECONDS = 0.02
COOKIE = "__Host-msal-gateway"
API = {"Accept": "application/json"}
# The redis-server arguments docs/operations.md asks operators for: a master refuses writes once
# no replica has acknowledged for 10 s, and a replica that must resynchronise in full (after a
# SENTINEL FAILOVER) gets its copy at once instead of 5 s later.
OPERATOR_NODE_ARGS = (
    "--min-replicas-to-write",
    "1",
    "--min-replicas-max-lag",
    "10",
    "--repl-diskless-sync-delay",
    "0",
)


class PromotionClock:
    """Records every promotion: each time any sentinel first names a master other than the one
    at start and the ones named before (with down-after 1 s the sentinels sometimes fail a just
    promoted master over again, so there can be two), and when every sentinel first named a new
    master."""

    def __init__(self, sentinels: SentinelSet, t0: float) -> None:
        self._sentinels = sentinels
        self._t0 = t0
        self.old = sentinels.master_address()
        self.promotions: list[tuple[float, tuple[str, int]]] = []
        self.all: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="promotion-clock", daemon=True)
        self._thread.start()

    @property
    def first(self) -> float | None:
        return self.promotions[0][0] if self.promotions else None

    def _run(self) -> None:
        clients = [self._sentinels.sentinel_client(i) for i in range(3)]
        seen = {self.old}
        try:
            while not self._stop.is_set():
                named: list[tuple[str, int] | None] = []
                for client in clients:
                    try:
                        host, port = client.execute_command(  # type: ignore[no-untyped-call]
                            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"
                        )
                        named.append((str(host), int(port)))
                    except (redis.RedisError, OSError):
                        named.append(None)
                now = time.monotonic() - self._t0
                for address in named:
                    if address is not None and address not in seen:
                        seen.add(address)
                        self.promotions.append((now, address))
                if self.all is None and all(a not in (None, self.old) for a in named):
                    self.all = now
                time.sleep(PROMOTION_POLL_SECONDS)
        finally:
            for client in clients:
                client.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class Attempts:
    """Timed outcomes of one kind of operation (seconds on the run's clock)."""

    failed: list[tuple[float, float]] = field(default_factory=list)
    succeeded: list[tuple[float, float]] = field(default_factory=list)

    def refused_after(self, promotions: Sequence[float]) -> float | None:
        """How long after a promotion failures still ended: for each failure that ended after
        the first promotion, the time since the latest promotion before its end; the most of
        those (0 if none); None without a promotion."""
        if not promotions:
            return None
        late = [0.0]
        for _, end in self.failed:
            before = [at for at in promotions if at <= end]
            if before:
                late.append(end - before[-1])
        return max(late)

    def succeeded_after(self, promoted: float | None) -> bool:
        return promoted is not None and any(start > promoted for start, _ in self.succeeded)


@dataclass
class Run:
    """What one failover did."""

    fault: str
    fault_at: float = 0.0
    promotion: PromotionClock | None = None
    writes: Attempts = field(default_factory=Attempts)
    sign_ins: Attempts = field(default_factory=Attempts)
    confirmed: dict[str, bytes] = field(default_factory=dict)
    lost_writes: list[str] = field(default_factory=list)
    sessions: dict[str, int] = field(default_factory=dict)  # cookie -> gateway it came from
    lost_sessions: list[str] = field(default_factory=list)
    reads: Attempts = field(default_factory=Attempts)

    @property
    def promoted(self) -> float | None:
        """The first promotion (seconds on the run's clock)."""
        return None if self.promotion is None else self.promotion.first

    @property
    def promotions(self) -> list[float]:
        return [] if self.promotion is None else [at for at, _ in self.promotion.promotions]

    def summary(self) -> str:
        promoted = self.promoted
        after = "never" if promoted is None else f"{promoted - self.fault_at:.2f} s"
        again = "" if len(self.promotions) < 2 else f" ({len(self.promotions)} promotions)"
        writes = self.writes.refused_after(self.promotions)
        sign_ins = self.sign_ins.refused_after(self.promotions)
        return (
            f"{self.fault}: promoted {after} after the fault{again}; writes refused until "
            f"{_secs(writes)} after a promotion, sign-ins until {_secs(sign_ins)}; "
            f"{len(self.confirmed)} writes and {len(self.sessions)} sign-ins confirmed, "
            f"{len(self.lost_writes)} and {len(self.lost_sessions)} lost"
        )


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


async def write_load(storage: RedisStorage, run: Run, t0: float, stop: asyncio.Event) -> None:
    """One writer: SET and compare-and-set in turn, each value remembered once confirmed."""
    count = 0
    while not stop.is_set():
        count += 1
        key = f"gw:session:{secrets.token_hex(8)}"
        value = secrets.token_bytes(8)
        started = time.monotonic() - t0
        try:
            if count % 2:
                await storage.set(key, value, ttl=600)
            else:
                assert await storage.replace(key, None, value, ttl=600)
        except StoreUnavailable:
            run.writes.failed.append((started, time.monotonic() - t0))
            await asyncio.sleep(0.01)
        else:
            run.confirmed[key] = value
            run.writes.succeeded.append((started, time.monotonic() - t0))
        await asyncio.sleep(0.005)  # leave CPU to the servers on a two-core machine


def missing(sentinels: SentinelSet, confirmed: dict[str, bytes]) -> list[str]:
    """Confirmed writes the current master does not hold (or holds with another value)."""
    keys = list(confirmed)
    with sentinels.node_client(sentinels.master_address()) as node:
        stored: list[bytes | None] = []
        for start in range(0, len(keys), 1000):
            stored += node.mget(keys[start : start + 1000])
    return [k for k, v in zip(keys, stored, strict=True) if v != confirmed[k]]


@dataclass
class Gateways:
    """Two gateways sharing the sentinels: where they answer, and how to make a browser there."""

    urls: Sequence[str]
    browser: Callable[[str], Browser]


async def sign_in_churn(
    gateways: Gateways, run: Run, t0: float, stop: asyncio.Event, users: Callable[[], str]
) -> None:
    """Sign in through a random gateway, again and again; every completed sign-in (the callback
    redirected back with a session cookie) is a confirmed session, except every third one, which
    is signed out again at once: from then on it is not expected to work, whether the sign-out
    answered 302 or 503 (a sign-out the store could not confirm may still have happened). Each
    sign-in is of the next of `users`: no user may pass the gateway's cap of 100 sessions."""
    count = 0
    while not stop.is_set():
        count += 1
        index = random.randrange(len(gateways.urls))
        browser = gateways.browser(gateways.urls[index])
        started = time.monotonic() - t0
        try:
            response = await browser.sign_in("/churn", users())
            cookie = browser.cookie(COOKIE)
            ok = response.status == 302 and cookie is not None
            if ok and count % 3 == 0:
                cookie = None
                await browser.get("/.auth/logout")
        except (AssertionError, aiohttp.ClientError):
            ok, cookie = False, None
        finally:
            await browser.close()
        ended = time.monotonic() - t0
        if ok:
            run.sign_ins.succeeded.append((started, ended))
            if cookie is not None:
                run.sessions[cookie] = index
        else:
            run.sign_ins.failed.append((started, ended))
            await asyncio.sleep(0.05)


async def signed_in_reads(
    gateways: Gateways, client: aiohttp.ClientSession, run: Run, t0: float, stop: asyncio.Event
) -> None:
    """/.auth/me with sessions already confirmed, on either gateway; a 401 is a lost session."""
    while not stop.is_set():
        if not run.sessions:
            await asyncio.sleep(0.05)
            continue
        cookie = random.choice(list(run.sessions))
        url = random.choice(gateways.urls) + "/.auth/me"
        started = time.monotonic() - t0
        try:
            async with client.get(url, headers={**API, "Cookie": f"{COOKIE}={cookie}"}) as r:
                status = r.status
                await r.read()
        except aiohttp.ClientError:
            status = 0
        ended = time.monotonic() - t0
        if status == 200:
            run.reads.succeeded.append((started, ended))
        else:
            run.reads.failed.append((started, ended))
            if status == 401 and cookie not in run.lost_sessions:
                run.lost_sessions.append(cookie)
        await asyncio.sleep(0.02)


async def sessions_gone(
    gateways: Gateways, client: aiohttp.ClientSession, run: Run, deadline: float = 10.0
) -> list[str]:
    """Confirmed sessions that some gateway answers 401 for, once the store answers again (a 503
    is retried until `deadline` seconds have passed)."""
    gone = set(run.lost_sessions)
    give_up = time.monotonic() + deadline
    for cookie in run.sessions:
        for url in gateways.urls:
            while True:
                async with client.get(
                    url + "/.auth/me", headers={**API, "Cookie": f"{COOKIE}={cookie}"}
                ) as response:
                    status = response.status
                    await response.read()
                if status != 503 or time.monotonic() > give_up:
                    break
                await asyncio.sleep(0.1)
            if status == 401:
                gone.add(cookie)
    return sorted(gone)


async def through(
    sentinels: SentinelSet,
    fault: str,
    storage: RedisStorage,
    *,
    gateways: Gateways | None = None,
    writers: int = 4,
    churners: int = 3,
    readers: int = 2,
    after_seconds: float = 3.0,
    on_fault: Callable[[], Awaitable[None]] | None = None,
    users: Sequence[str] = ("alice", "bob", "jose"),
) -> Run:
    """Run the load, inject `fault` ("failover": SENTINEL FAILOVER; "kill": kill -9 of the
    master), keep the load on for `after_seconds` after every sentinel names the new master, then
    count what was lost. `on_fault` runs right after the fault is injected."""
    run = Run(fault)
    t0 = time.monotonic()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(write_load(storage, run, t0, stop)) for _ in range(writers)]
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(
        timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
    ) as client:
        if gateways is not None:
            turn = itertools.count()

            def next_user() -> str:
                return users[next(turn) % len(users)]

            tasks += [
                asyncio.create_task(sign_in_churn(gateways, run, t0, stop, next_user))
                for _ in range(churners)
            ]
            tasks += [
                asyncio.create_task(signed_in_reads(gateways, client, run, t0, stop))
                for _ in range(readers)
            ]
        try:
            await _steady(run, gateways is not None)
            assert not run.writes.failed, "writes failed before the fault"
            run.promotion = PromotionClock(sentinels, t0)
            run.fault_at = time.monotonic() - t0
            old = run.promotion.old
            if fault == "kill":
                sentinels.node_at(old).kill()
            else:
                await asyncio.to_thread(sentinels.failover)
            if on_fault is not None:
                await on_fault()
            await asyncio.to_thread(sentinels.wait_for_master_other_than, old)
            await asyncio.sleep(after_seconds)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            if run.promotion is not None:
                run.promotion.stop()
        run.lost_writes = await asyncio.to_thread(missing, sentinels, run.confirmed)
        if gateways is not None:
            run.lost_sessions = await sessions_gone(gateways, client, run)
    return run


async def _steady(run: Run, signing_in: bool, seconds: float = 20.0) -> None:
    """Until writes (and sign-ins) have been confirmed for a while."""
    deadline = time.monotonic() + seconds
    while len(run.confirmed) < 100 or (signing_in and len(run.sessions) < 3):
        assert time.monotonic() < deadline, "the load never got going"
        await asyncio.sleep(0.05)
