"""How fast a client must go: the pace of a request body it sends and of a response it reads.

A client that trickles its upload, or never reads its answer, holds a connection to the
application (and a turn in its pool) for as long as it likes; a few such clients take every slot
from everyone else. Only time spent waiting on the client counts, never the application's: after
`grace` seconds of client time the client must have moved `min_rate` bytes per second of it, and
no single wait on the client may last longer than `grace` (bytes handed to the kernel's buffers
are not yet taken by the client, so a stalled write is judged by its stall). A total may be set as
well. Large uploads and downloads on slow but moving links pass; event
streams pass, since an application that sends slowly is not the client's fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from gateway.errors import ClientTooSlow
from gateway.upstream.client import BodySource


@dataclass(frozen=True, slots=True)
class Pace:
    min_rate: float  # bytes per second of client time; 0: no minimum
    grace: float  # seconds of client time before the minimum applies
    upload_total: float  # seconds for a whole request body; 0: no limit
    download_total: float  # seconds for a whole streamed response; 0: no limit

    def allowance(self, moved: int, waited: float) -> float:
        """How much longer the client may take to move its next bytes: never more than `grace`
        at a stretch (a write the client leaves stalled, an upload gone quiet), and no more
        than keeps it at `min_rate` over all its time so far."""
        if self.min_rate <= 0:
            return math.inf
        return max(min(self.grace, self.grace + moved / self.min_rate - waited), 0.0)


class _ClientClock:
    """Time spent waiting on one client and bytes moved, for one direction of one request."""

    def __init__(self, pace: Pace, total: float) -> None:
        self._pace = pace
        self._total = total
        self._loop = asyncio.get_running_loop()
        self._start = self._loop.time()
        self._moved = 0
        self._waited = 0.0

    @contextlib.asynccontextmanager
    async def wait(self) -> AsyncIterator[None]:
        """One wait on the client, bounded by the pace (and the total); TimeoutError beyond."""
        loop = self._loop
        limit = self._pace.allowance(self._moved, self._waited)
        if self._total > 0:
            limit = min(limit, self._start + self._total - loop.time())
        began = loop.time()
        async with asyncio.timeout(None if limit == math.inf else max(limit, 0.0)):
            yield
        self._waited += loop.time() - began

    def moved(self, size: int) -> None:
        self._moved += size


class PacedBody:
    """The client's request body (aiohttp's StreamReader), refusing a client slower than the
    pace with ClientTooSlow (408)."""

    def __init__(self, source: BodySource, pace: Pace) -> None:
        self._source = source
        self._clock = _ClientClock(pace, pace.upload_total)

    async def readany(self) -> bytes:
        try:
            async with self._clock.wait():
                chunk = await self._source.readany()
        except TimeoutError as exc:
            raise ClientTooSlow("the request body arrived too slowly") from exc
        self._clock.moved(len(chunk))
        return chunk


class PacedWriter:
    """Writes a streamed response, cutting off a client that reads slower than the pace."""

    def __init__(self, response: web.StreamResponse, pace: Pace) -> None:
        self._response = response
        self._clock = _ClientClock(pace, pace.download_total)

    async def write(self, chunk: bytes) -> None:
        """TimeoutError when the client took too long to take `chunk`."""
        async with self._clock.wait():
            await self._response.write(chunk)
        self._clock.moved(len(chunk))
