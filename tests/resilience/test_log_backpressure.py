"""Log output never stalls the gateway: with stderr not read at all (a stuck log collector, a full
pipe), a gateway process keeps answering, and lines that cannot be written are counted and
reported instead of blocking the event loop (the writer's bound and its count of dropped lines:
tests/unit/gateway/telemetry/test_logs.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from support.gateway import GatewayProcess, settings_for
from support.threaded import ThreadedServer

REQUESTS = 3000  # about 600 KB of access log: far more than a 64 KiB pipe holds


async def test_a_gateway_whose_stderr_nobody_reads_keeps_answering(
    idp: Any, upstream: ThreadedServer
) -> None:
    settings = settings_for(idp, upstream.url, proxy={"public_paths": "/"})
    gateway = await GatewayProcess(settings).ready()  # stderr is a pipe this test never reads
    statuses: list[int] = []
    try:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as client:

            async def user(count: int) -> None:
                for index in range(count):
                    async with client.get(f"{gateway.url}/log/{index}") as response:
                        await response.read()
                        statuses.append(response.status)

            await asyncio.gather(*(user(REQUESTS // 10) for _ in range(10)))
    finally:
        log = gateway.stop()
    assert statuses.count(200) == REQUESTS
    assert gateway.returncode == 0
    assert (
        '"http.response.status_code": 200' in log
    )  # the lines were queued, then written once read
