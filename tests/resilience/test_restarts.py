"""Restarts under load, with real processes: a gateway replica restarted while traffic flows, and
Redis killed and restarted (with its append-only file) while traffic flows. Signed-in users must
never be signed out: every answer is a 200, or, while a component is down, a refused connection
or a clean 503 - never a 401 and never a 500."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import aiohttp
from support.browser import API, Browser
from support.gateway import (
    PUBLIC_URL,
    SESSION_COOKIE,
    GatewayProcess,
    idp_ssl,
    settings_for,
    shared_redis,
)
from support.redis_server import RedisServer
from support.threaded import ThreadedServer

USERS = 8


async def signed_in_cookies(gateway: GatewayProcess, idp: Any, users: int) -> list[str]:
    cookies = []
    for index in range(users):
        browser = Browser(gateway.url, PUBLIC_URL, idp_ssl(idp.ca_path))
        try:
            assert (
                await browser.sign_in(f"/u{index}", "alice" if index % 2 else "bob")
            ).status == 302
            value = browser.cookie(SESSION_COOKIE)
            assert value
            cookies.append(value)
        finally:
            await browser.close()
    return cookies


class Load:
    """Each user asks each replica in turn until stopped; every outcome is kept with its time."""

    def __init__(self, urls: Sequence[str], cookies: Sequence[str]) -> None:
        self.urls, self.cookies = list(urls), list(cookies)
        self.outcomes: list[tuple[float, str, str]] = []  # (time, url, status or error)
        self._stop = asyncio.Event()

    async def _user(self, cookie: str, client: aiohttp.ClientSession) -> None:
        turn = 0
        while not self._stop.is_set():
            url = self.urls[turn % len(self.urls)]
            turn += 1
            try:
                async with client.get(
                    url + "/load", headers={**API, "Cookie": f"{SESSION_COOKIE}={cookie}"}
                ) as response:
                    await response.read()
                    outcome = str(response.status)
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                outcome = type(exc).__name__
            self.outcomes.append((time.monotonic(), url, outcome))
            await asyncio.sleep(0.01)

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as client:
            await asyncio.gather(*(self._user(cookie, client) for cookie in self.cookies))

    def stop(self) -> None:
        self._stop.set()

    def counts(self) -> Counter[str]:
        return Counter(outcome for _, _, outcome in self.outcomes)


async def all_served(urls: Sequence[str], cookies: Sequence[str]) -> bool:
    async with aiohttp.ClientSession() as client:
        for url in urls:
            for cookie in cookies:
                async with client.get(
                    url + "/after", headers={**API, "Cookie": f"{SESSION_COOKIE}={cookie}"}
                ) as response:
                    if response.status != 200:
                        return False
    return True


async def test_a_replica_restarted_under_load_signs_nobody_out(
    idp: Any, upstream: ThreadedServer, redis_url: str
) -> None:
    settings = settings_for(
        idp,
        upstream.url,
        **shared_redis(redis_url),
    )
    first = await GatewayProcess(settings).ready()
    second = await GatewayProcess(settings).ready()
    replacement: GatewayProcess | None = None
    try:
        cookies = await signed_in_cookies(first, idp, USERS)
        load = Load([first.url, second.url], cookies)
        traffic = asyncio.create_task(load.run())
        await asyncio.sleep(1.0)
        log = first.stop()  # SIGTERM: drain (0 s in tests), finish, exit
        assert first.returncode == 0, log
        replacement = await GatewayProcess(settings, port=first.port).ready()
        await asyncio.sleep(1.0)
        load.stop()
        await traffic
        counts = load.counts()
        print(f"\nreplica restart under load: {dict(counts)}")
        # The restarted replica refused connections for a moment; nothing else may go wrong.
        assert set(counts) <= {"200", "ClientConnectorError", "ServerDisconnectedError", "503"}
        assert counts["200"] > 100
        others = [outcome for _, url, outcome in load.outcomes if url == second.url]
        assert set(others) == {"200"}  # the other replica never noticed
        assert await all_served([replacement.url, second.url], cookies)
    finally:
        for gateway in (second, replacement):
            if gateway is not None:
                gateway.stop()


async def test_redis_killed_and_restarted_under_load_signs_nobody_out(
    idp: Any, upstream: ThreadedServer
) -> None:
    # Sessions outlive a Redis restart only if Redis keeps them: the append-only file, fsynced.
    redis = RedisServer(extra_args=("--appendonly", "yes", "--appendfsync", "always")).start()
    settings = settings_for(
        idp,
        upstream.url,
        **shared_redis(redis.url),
        redis={"socket_timeout_seconds": 0.5, "connect_timeout_seconds": 0.5},
    )
    gateways = [await GatewayProcess(settings).ready() for _ in range(2)]
    try:
        cookies = await signed_in_cookies(gateways[0], idp, USERS)
        load = Load([gateway.url for gateway in gateways], cookies)
        traffic = asyncio.create_task(load.run())
        await asyncio.sleep(1.0)
        killed_at = time.monotonic()
        redis.kill()
        await asyncio.sleep(1.0)
        redis.start()
        back_at = time.monotonic()
        await asyncio.sleep(2.0)
        load.stop()
        await traffic
        counts = load.counts()
        refused = [at for at, _, outcome in load.outcomes if outcome == "503"]
        window = (
            f"{refused[0] - killed_at:.2f}..{refused[-1] - killed_at:.2f} s" if refused else "-"
        )
        print(f"\nRedis kill -9 and restart under load: {dict(counts)}; 503s at {window}")
        assert set(counts) <= {"200", "503"}  # never 401 (signed out), never 500
        assert counts["503"] > 0  # the outage was seen ...
        # ... and only while Redis was down (plus the time a client needs to reconnect).
        assert all(killed_at <= at <= back_at + 2.0 for at in refused)
        assert await all_served([gateway.url for gateway in gateways], cookies)
    finally:
        for gateway in gateways:
            log = gateway.stop()
            assert "Traceback" not in log, log
        redis.cleanup()
