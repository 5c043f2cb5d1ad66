"""SIGTERM as Kubernetes sends it: readiness turns false at once, new requests are still served
during the drain window, requests in flight (a slow upstream answer) finish, and the process
exits 0 with JSON log lines that carry request ids and never a query string."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from support.gateway import GatewayProcess, settings_for
from support.threaded import ThreadedServer


@pytest.mark.threat("F-17")
async def test_sigterm_drains_then_exits_cleanly(idp: Any, upstream: ThreadedServer) -> None:
    settings = settings_for(idp, upstream.url, proxy={"public_paths": "/"})
    gateway = GatewayProcess(
        settings,
        extra_env={"GATEWAY_PROXY__DRAIN_SECONDS": "1.5", "GATEWAY_LOG__FORMAT": "json"},
    )
    await gateway.ready()
    async with aiohttp.ClientSession() as client:
        slow = asyncio.create_task(
            client.get(
                f"{gateway.url}/_slow?seconds=2&secret=abc",
                headers={"X-Request-Id": "slow-request-1"},
            )
        )
        await asyncio.sleep(0.3)
        gateway.terminate()
        await asyncio.sleep(0.2)
        async with client.get(gateway.url + "/.auth/readyz") as ready:
            assert ready.status == 503
            assert (await ready.json())["checks"]["server"] == "shutting down"
        async with client.get(gateway.url + "/during-drain") as during:
            assert during.status == 200  # still accepted: the load balancer may not know yet
        response = await slow
        assert response.status == 200
        assert (await response.json()) == {"slow": True}
        response.release()
    await asyncio.to_thread(gateway.process.wait, 10)  # exits by itself after the drain
    log = gateway.stop()
    assert gateway.returncode == 0, log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("event") == "access"]
    slow_line = next(line for line in access if line["path"] == "/_slow")
    assert slow_line["request_id"] == "slow-request-1" and slow_line["status"] == 200
    assert "secret=abc" not in log  # queries never reach the log
    assert any(line["message"] == "stopped" for line in lines)
