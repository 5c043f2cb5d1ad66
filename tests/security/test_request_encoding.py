"""Issue 14 item 8: request bodies pass byte for byte. A gzip, deflate or br body reaches the
application as sent, with its Content-Encoding and Content-Length (aiohttp's server would inflate
it and keep the label), and an anonymous client's compressed body is never inflated by the
gateway. Against a real gateway process (the production server runner)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import zlib
from collections.abc import AsyncIterator
from typing import Any, Final

import aiohttp
import pytest
from support.browser import API
from support.gateway import GatewayProcess, session_cookie, settings_for
from support.threaded import ThreadedServer
from support.upstream import upstream_headers

pytestmark = pytest.mark.threat("HT-19", "HT-07")

PLAIN: Final = b'{"rows": [' + b'{"a": 1},' * 20_000 + b'{"a": 1}]}'
ENCODED: Final = {
    "gzip": gzip.compress(PLAIN),
    "deflate": zlib.compress(PLAIN),
    "x-custom": b"\x00\x01 opaque bytes \xff",
}


@pytest.fixture
async def process(idp: Any, upstream: ThreadedServer) -> AsyncIterator[tuple[str, str]]:
    gateway = GatewayProcess(settings_for(idp, upstream.url))
    try:
        await gateway.ready()
        yield gateway.url, await session_cookie(gateway.url, idp)
    finally:
        gateway.stop()
        await asyncio.sleep(0)


@pytest.mark.parametrize("encoding", list(ENCODED))
async def test_an_encoded_body_reaches_the_app_as_sent(
    process: tuple[str, str], encoding: str
) -> None:
    url, cookie = process
    body = ENCODED[encoding]
    headers = {
        **API,
        "Cookie": f"__Host-msal-gateway={cookie}",
        "Content-Encoding": encoding,
        "Content-Type": "application/json",
    }
    async with (
        aiohttp.ClientSession(auto_decompress=False) as client,
        client.post(url + "/upload", data=body, headers=headers) as response,
    ):
        echoed = await response.json()
        assert response.status == 200, echoed
    seen = upstream_headers(echoed)
    assert echoed["body_length"] == len(body)
    assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert seen["content-encoding"] == [encoding]
    assert seen["content-length"] == [str(len(body))]


async def test_an_anonymous_compressed_body_is_refused_unread(process: tuple[str, str]) -> None:
    url, _ = process
    bomb = gzip.compress(b"\x00" * 50_000_000)  # 50 MB inflated, about 50 KB sent
    headers = {**API, "Content-Encoding": "gzip"}
    async with (
        aiohttp.ClientSession() as client,
        client.post(url + "/upload", data=bomb, headers=headers) as response,
    ):
        assert response.status == 401
        assert (await response.json())["error"] == "sign_in_required"
