"""Prometheus metrics on their own listener: requests, sign-ins, refreshes and errors counted."""

from __future__ import annotations

from typing import Any

import aiohttp
from support.fixtures import Launch
from support.redis_server import free_port
from test_signin import API, signed_in


def sample(text: str, name: str) -> float:
    """The value of one sample line, e.g. 'msal_gateway_signins_total{outcome="success"}'."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported:\n{text}")


async def scrape(port: int) -> str:
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return await response.text()


async def test_metrics_count_requests_signins_and_refreshes(launch: Launch, idp: Any) -> None:
    port = free_port()
    running = await launch(metrics_listen=f"127.0.0.1:{port}", scopes="api://upstream/read")
    await signed_in(running)
    assert (await running.browser.get("/x", headers=API)).status == 200
    refreshed = await running.browser.session.post(running.url + "/.auth/refresh", headers=API)
    await refreshed.read()
    assert refreshed.status == 200
    # /metrics on the main listener is the application's, not the gateway's.
    proxied = await running.browser.get("/metrics", headers=API)
    assert (await proxied.json())["path"] == "/metrics"
    text = await scrape(port)
    assert sample(text, 'msal_gateway_signins_total{outcome="success"}') == 1
    assert sample(text, 'msal_gateway_token_refreshes_total{outcome="success"}') == 1
    assert sample(text, 'msal_gateway_requests_total{route="proxy",status="200"}') >= 2
    assert sample(text, 'msal_gateway_requests_total{route="proxy",status="302"}') >= 1
    assert sample(text, 'msal_gateway_request_duration_seconds_count{route="auth"}') >= 3
    assert sample(text, "msal_gateway_forwarded_without_identity_total") == 0  # the canary


async def test_upstream_errors_are_counted(launch: Launch) -> None:
    port = free_port()
    running = await launch(
        upstream=f"http://127.0.0.1:{free_port()}",
        proxy={"public_paths": "/"},
        metrics_listen=f"127.0.0.1:{port}",
    )
    assert (await running.browser.get("/x", headers=API)).status == 502
    text = await scrape(port)
    assert sample(text, 'msal_gateway_upstream_errors_total{kind="upstream_unavailable"}') == 1
