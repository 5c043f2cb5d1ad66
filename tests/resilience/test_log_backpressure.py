"""Log output never stalls the gateway: with stderr not read at all (a stuck log collector, a full
pipe), a gateway process keeps answering, and lines that cannot be written are counted and
reported instead of blocking the event loop."""

from __future__ import annotations

import asyncio
import logging
import queue
from typing import Any

import aiohttp
from support.gateway import GatewayProcess, settings_for
from support.threaded import ThreadedServer

from gateway.telemetry.logs import NonBlockingHandler

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
    assert '"status": 200' in log  # the lines were queued, then written once read


def test_a_full_queue_drops_and_counts_instead_of_waiting() -> None:
    records: queue.Queue[logging.LogRecord | None] = queue.Queue(2)
    handler = NonBlockingHandler(records)
    logger = logging.getLogger("test.backpressure")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for index in range(5):
            logger.warning("line %d", index)  # returns at once even though nobody reads
        assert handler.dropped == 3
        first = records.get_nowait()
        assert first is not None and first.getMessage() == "line 0"
        records.get_nowait()
        logger.warning("after")
        notice, after = records.get_nowait(), records.get_nowait()
        assert notice is not None and notice.getMessage().startswith("3 log lines were dropped")
        assert after is not None and after.getMessage() == "after"
        assert handler.dropped == 0
    finally:
        logger.removeHandler(handler)
