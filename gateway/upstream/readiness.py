"""Whether the application is ready: its answer to GET on GATEWAY_PROXY__UPSTREAM_READY_PATH,
asked at most every CHECK_SECONDS, so probes from many kubelets or load balancers cost the
application one request every few seconds."""

from __future__ import annotations

import math
import time
from typing import Final

from multidict import CIMultiDict

from gateway.errors import UpstreamBusy, UpstreamTimeout, UpstreamUnavailable
from gateway.upstream.client import UpstreamPool

CHECK_SECONDS: Final = 2.0


class ApplicationReadiness:
    def __init__(self, path: str) -> None:
        self._path = path
        self._checked_at = -math.inf
        self._verdict = ""

    async def verdict(self, pool: UpstreamPool, prefix: str) -> str:
        """ "ok" for a 2xx or 3xx answer, else what went wrong, in a few words."""
        now = time.monotonic()
        if now - self._checked_at < CHECK_SECONDS:
            return self._verdict
        try:
            headers = CIMultiDict({"User-Agent": "msal-gateway"})
            async with await pool.send("GET", prefix + self._path, headers, None) as response:
                await response.read()
                ok = 200 <= response.status < 400
                verdict = "ok" if ok else f"answered {response.status}"
        except (UpstreamUnavailable, UpstreamTimeout, UpstreamBusy):
            verdict = "unreachable"
        self._checked_at, self._verdict = now, verdict
        return verdict
