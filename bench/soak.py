"""A bounded soak: two gateway processes on Redis behind Sentinel, mixed traffic for a while, one
Sentinel failover in the middle. Prints request counts by outcome, the unexpected errors, and each
gateway's memory at the start and the end.

    .venv/bin/python bench/soak.py [--seconds 600] [--users 20] [--concurrency 16]

"Expected" outcomes: 200 for signed-in requests, 302 for anonymous navigations, and 503 while
Redis fails over (the store is briefly unreachable: never "signed out", never let through).
Anything else is unexpected and printed. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import random  # traffic shapes, not secrets
import secrets
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.browser import Browser
from support.gateway import PUBLIC_URL, GatewayProcess, idp_ssl, settings_for
from support.idp import ThreadedDevIdp
from support.redis_sentinel import SentinelSet
from support.threaded import ThreadedServer
from support.upstream import make_upstream_app

from gateway.devidp.config import DevIdpConfig

COOKIE = "__Host-msal-gateway"
USERS = ("alice", "bob", "jose")


def rss_kib(process: GatewayProcess) -> int:
    with open(f"/proc/{process.process.pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def run(seconds: float, users: int, concurrency: int) -> None:
    idp_thread = ThreadedDevIdp(DevIdpConfig(port=0))
    idp = idp_thread.start()
    upstream = ThreadedServer(make_upstream_app).start()
    sentinels = SentinelSet().start()
    settings = settings_for(
        idp,
        upstream.url,
        session_store="redis",
        cookie_secret=secrets.token_urlsafe(32),
        scopes="api://upstream/read",
        redis={"sentinels": sentinels.addresses},
    )
    gateways = [GatewayProcess(settings), GatewayProcess(settings)]
    outcomes: collections.Counter[str] = collections.Counter()
    unexpected: list[str] = []
    failover_at = None
    try:
        for gateway in gateways:
            await gateway.ready()
        sessions = []
        for i in range(users):
            browser = Browser(gateways[i % 2].url, PUBLIC_URL, idp_ssl(idp.ca_path))
            await browser.sign_in("/", USERS[i % len(USERS)])
            sessions.append(browser.cookie(COOKIE) or "")
            await browser.close()
        rss_start = [rss_kib(g) for g in gateways]
        deadline = time.monotonic() + seconds
        failover_time = time.monotonic() + seconds / 2
        async with aiohttp.ClientSession() as client:

            async def one(kind: str) -> None:
                gateway = random.choice(gateways)
                cookie = random.choice(sessions)
                headers = {"Accept": "application/json", "Cookie": f"{COOKIE}={cookie}"}
                try:
                    if kind == "get":
                        response = await client.get(
                            f"{gateway.url}/r/{random.randrange(1000)}", headers=headers
                        )
                        expected = {200}
                    elif kind == "upload":
                        body = io.BytesIO(random.randbytes(random.randrange(1, 256 * 1024)))
                        response = await client.post(
                            f"{gateway.url}/upload", data=body, headers=headers
                        )
                        expected = {200}
                    else:
                        response = await client.get(
                            f"{gateway.url}/private",
                            headers={"Accept": "text/html", "Sec-Fetch-Mode": "navigate"},
                            allow_redirects=False,
                        )
                        expected = {302}
                    async with response:
                        await response.read()
                        status = response.status
                except aiohttp.ClientError as exc:
                    outcomes["connection error"] += 1
                    unexpected.append(f"{kind}: {type(exc).__name__}")
                    return
                outcomes[f"{kind} {status}"] += 1
                if status not in expected and status != 503:
                    unexpected.append(f"{kind}: HTTP {status}")

            async def worker() -> None:
                nonlocal failover_at
                while time.monotonic() < deadline:
                    if failover_at is None and time.monotonic() >= failover_time:
                        failover_at = time.monotonic()
                        await asyncio.to_thread(sentinels.failover)
                    await one(random.choices(("get", "upload", "anonymous"), (8, 1, 1))[0])

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        rss_end = [rss_kib(g) for g in gateways]
        total = sum(outcomes.values())
        print("| measure | value |")
        print("|---|---|")
        print(f"| duration | {seconds:.0f} s, {concurrency} concurrent clients, {users} sessions |")
        print(f"| requests | {total} ({total / seconds:.0f}/s) |")
        for name, count in sorted(outcomes.items()):
            print(f"| {name} | {count} |")
        print(f"| unexpected outcomes | {len(unexpected)} |")
        for i, (start, end) in enumerate(zip(rss_start, rss_end, strict=True)):
            print(f"| gateway {i + 1} RSS start -> end | {start} KiB -> {end} KiB |")
        for line in collections.Counter(unexpected).most_common(10):
            print(f"unexpected: {line[0]} (x{line[1]})")
    finally:
        for gateway in gateways:
            gateway.stop()
        sentinels.cleanup()
        upstream.stop()
        idp_thread.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(run(args.seconds, args.users, args.concurrency))


if __name__ == "__main__":
    main()
