"""1 GiB through a gateway process in each direction: bodies stream, memory stays flat."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any, Final

import aiohttp
from support.browser import API, Browser
from support.gateway import PUBLIC_URL, GatewayProcess, idp_ssl, settings_for
from support.threaded import ThreadedServer

GIB: Final = 1024**3
CHUNK: Final = 256 * 1024
MAX_GROWTH_KIB: Final = 20 * 1024


async def test_one_gib_each_way_with_bounded_memory(idp: Any, upstream: ThreadedServer) -> None:
    gateway = GatewayProcess(settings_for(idp, upstream.url))
    browser = Browser(gateway.url, PUBLIC_URL, idp_ssl(idp.ca_path))
    try:
        await gateway.ready()
        assert (await browser.sign_in("/")).status == 302
        # Warm up the paths once so that lazily built objects do not count as growth.
        await (await browser.get("/_bytes?n=10000000", headers=API)).read()
        baseline = gateway.rss_peak_kib()

        block = bytes(range(256)) * (CHUNK // 256)
        expected = hashlib.sha256()
        for _ in range(GIB // CHUNK):
            expected.update(block)

        async def body() -> AsyncIterator[bytes]:
            for _ in range(GIB // CHUNK):
                yield block

        response = await browser.session.post(
            gateway.url + "/upload",
            data=body(),
            headers=API,
            timeout=aiohttp.ClientTimeout(total=300),
        )
        echoed = await response.json()
        assert echoed["body_length"] == GIB
        assert echoed["body_sha256"] == expected.hexdigest()

        received = 0
        response = await browser.get(f"/_bytes?n={GIB}", headers=API, read=False)
        async with response:
            async for chunk in response.content.iter_any():
                received += len(chunk)
        assert received == GIB

        growth = gateway.rss_peak_kib() - baseline
        print(f"gateway peak RSS growth after 2 GiB streamed: {growth} KiB")
        assert growth < MAX_GROWTH_KIB, f"peak RSS grew by {growth} KiB"
    finally:
        await browser.close()
        gateway.stop()
