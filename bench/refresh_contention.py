"""Refresh contention across replicas, measured: three gateway processes on one Redis, the
development identity provider in strict refresh-token rotation, one session whose access token is
due, and a burst of concurrent requests spread over the replicas. Prints how many refresh calls
reached the identity provider, how many requests failed, and what a due refresh adds to a request.

    .venv/bin/python bench/refresh_contention.py [--requests 100] [--rounds 5]

Run it on an otherwise idle machine: it starts every process it needs on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import aiohttp
from support.browser import Browser
from support.gateway import (
    PUBLIC_URL,
    SESSION_COOKIE,
    GatewayProcess,
    idp_ssl,
    settings_for,
    shared_redis,
)
from support.idp import ThreadedDevIdp
from support.redis_server import RedisServer
from support.threaded import ThreadedServer
from support.upstream import make_upstream_app

from devidp.config import DevIdpConfig


async def timed_get(client: aiohttp.ClientSession, url: str, session: str) -> tuple[int, float]:
    started = time.perf_counter()
    async with client.get(
        url, headers={"Accept": "application/json", "Cookie": f"{SESSION_COOKIE}={session}"}
    ) as response:
        await response.read()
        return response.status, time.perf_counter() - started


async def run(requests: int, rounds: int) -> None:
    idp_thread = ThreadedDevIdp(DevIdpConfig(port=0, strict_rotation=True))
    idp = idp_thread.start()
    upstream = ThreadedServer(make_upstream_app).start()
    redis = RedisServer().start()
    settings = settings_for(
        idp, upstream.url, **shared_redis(redis.url), scopes="api://upstream/read"
    )
    replicas = [GatewayProcess(settings) for _ in range(3)]
    try:
        for replica in replicas:
            await replica.ready()
        browser = Browser(replicas[0].url, PUBLIC_URL, idp_ssl(idp.ca_path))
        idp.set_lifetimes(refresh_in=1)
        await browser.sign_in("/")
        session = browser.cookie(SESSION_COOKIE) or ""
        await browser.close()
        idp.set_lifetimes()
        connector = aiohttp.TCPConnector(limit=requests)
        async with aiohttp.ClientSession(connector=connector) as client:
            # Baseline: a request whose token is not due.
            warm = [await timed_get(client, f"{replicas[0].url}/warm", session) for _ in range(50)]
            baseline = statistics.median(t for _, t in warm)
            # The burst: every request arrives while the token is due.
            idp.set_lifetimes(refresh_in=1)
            await client.post(
                f"{replicas[0].url}/.auth/refresh",
                headers={"Cookie": f"{SESSION_COOKIE}={session}"},
            )
            idp.set_lifetimes()
            await asyncio.sleep(1.2)
            idp.clear_log()
            burst = await asyncio.gather(
                *(
                    timed_get(client, f"{replicas[i % 3].url}/b/{i}", session)
                    for i in range(requests)
                )
            )
            calls = len(idp.token_requests("refresh_token"))
            errors = sum(1 for status, _ in burst if status != 200)
            # A due refresh on its own, several times.
            due = []
            for _ in range(rounds):
                idp.set_lifetimes(refresh_in=1)
                await client.post(
                    f"{replicas[1].url}/.auth/refresh",
                    headers={"Cookie": f"{SESSION_COOKIE}={session}"},
                )
                idp.set_lifetimes()
                await asyncio.sleep(1.1)
                status, elapsed = await timed_get(client, f"{replicas[2].url}/due", session)
                errors += status != 200
                due.append(elapsed)
        print("| measure | value |")
        print("|---|---|")
        print(f"| concurrent requests for one due session (3 replicas) | {requests} |")
        print(f"| refresh calls that reached the identity provider | {calls} |")
        print(f"| failed requests (burst and due rounds) | {errors} |")
        print(f"| median request, token not due | {baseline * 1000:.1f} ms |")
        refreshing = statistics.median(due)
        print(f"| median request that performs a due refresh | {refreshing * 1000:.1f} ms |")
        print(f"| added by a due refresh (median) | {(refreshing - baseline) * 1000:.1f} ms |")
    finally:
        for replica in replicas:
            replica.stop()
        redis.cleanup()
        upstream.stop()
        idp_thread.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.rounds))


if __name__ == "__main__":
    main()
