"""Prometheus metrics on their own listener: requests, sign-ins, refreshes and errors counted."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from support.browser import API
from support.fixtures import Launch, signed_in
from support.gateway import GatewayProcess, settings_for
from support.metrics import build_info, expected_build_info, sample, scrape
from support.ports import free_port
from support.threaded import ThreadedServer


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


async def test_build_info_names_the_running_versions(launch: Launch) -> None:
    port = free_port()
    await launch(metrics_listen=f"127.0.0.1:{port}")
    assert build_info(await scrape(port)) == (expected_build_info(), 1.0)


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


def histogram(text: str, name: str, labels: str = "") -> tuple[float, float]:
    """(count, sum) of a histogram, e.g. histogram(text, "..._seconds", 'route="proxy"')."""
    suffix = "{" + labels + "}" if labels else ""
    return sample(text, f"{name}_count{suffix}"), sample(text, f"{name}_sum{suffix}")


async def test_latency_is_split_between_gateway_and_upstream(launch: Launch) -> None:
    port = free_port()
    running = await launch(proxy={"public_paths": "/"}, metrics_listen=f"127.0.0.1:{port}")
    slow = await running.browser.get("/_slow?seconds=0.3", headers=API)
    assert slow.status == 200
    text = await scrape(port)
    upstream_count, upstream_sum = histogram(text, "msal_gateway_upstream_duration_seconds")
    own_count, own_sum = histogram(text, "msal_gateway_gateway_duration_seconds", 'route="proxy"')
    total_count, total_sum = histogram(
        text, "msal_gateway_request_duration_seconds", 'route="proxy"'
    )
    assert upstream_count == own_count == total_count == 1
    # The upstream's 0.3 s is counted as the upstream's, not the gateway's.
    assert 0.3 <= upstream_sum < total_sum
    assert own_sum < 0.1
    assert own_sum + upstream_sum <= total_sum


async def test_answers_without_the_upstream_are_all_gateway_time(launch: Launch) -> None:
    port = free_port()
    running = await launch(metrics_listen=f"127.0.0.1:{port}")
    assert (await running.browser.get("/x", headers=API)).status == 401
    text = await scrape(port)
    assert histogram(text, "msal_gateway_gateway_duration_seconds", 'route="proxy"')[0] == 1
    assert histogram(text, "msal_gateway_upstream_duration_seconds") == (0, 0)


async def test_store_operations_are_counted_and_timed(launch: Launch) -> None:
    port = free_port()
    running = await launch(metrics_listen=f"127.0.0.1:{port}")
    await signed_in(running)
    assert (await running.browser.get("/x", headers=API)).status == 200
    text = await scrape(port)
    gets = sample(text, 'msal_gateway_store_operations_total{operation="get",outcome="ok"}')
    assert gets >= 1
    assert sample(text, 'msal_gateway_store_operations_total{operation="take",outcome="ok"}') >= 1
    assert sample(text, 'msal_gateway_store_operations_total{operation="get",outcome="error"}') == 0
    count, _ = histogram(text, "msal_gateway_store_operation_duration_seconds", 'operation="get"')
    assert count == gets


async def test_store_errors_are_counted_by_operation(launch: Launch) -> None:
    port = free_port()
    dead = f"redis://127.0.0.1:{free_port()}/0"
    running = await launch(
        session_store="redis",
        redis_url=dead,
        cookie_secret="s" * 32,
        metrics_listen=f"127.0.0.1:{port}",
        wait_ready=False,
    )
    response = await running.browser.get(
        "/x", headers={**API, "Cookie": f"{running.settings.session_cookie_name}={'A' * 43}"}
    )
    assert response.status == 503
    text = await scrape(port)
    assert sample(text, 'msal_gateway_store_operations_total{operation="get",outcome="error"}') >= 1
    assert sample(text, "msal_gateway_store_errors_total") == 1


async def test_open_websockets_are_a_gauge(launch: Launch) -> None:
    port = free_port()
    running = await launch(metrics_listen=f"127.0.0.1:{port}")
    await signed_in(running)
    async with running.browser.session.ws_connect(
        running.url + "/_ws", protocols=("echo.v1",)
    ) as ws:
        await ws.receive_json(timeout=5)
        assert sample(await scrape(port), "msal_gateway_open_websockets") == 1
    for _ in range(50):  # the relay notices the close a moment after the client
        if sample(await scrape(port), "msal_gateway_open_websockets") == 0:
            break
        await asyncio.sleep(0.05)
    assert sample(await scrape(port), "msal_gateway_open_websockets") == 0


async def test_a_client_that_leaves_early_is_499_not_an_error(
    idp: Any, upstream: ThreadedServer
) -> None:
    # A real gateway process: the test server would cancel the handler when the client leaves.
    port = free_port()
    settings = settings_for(
        idp, upstream.url, proxy={"public_paths": "/"}, metrics_listen=f"127.0.0.1:{port}"
    )
    gateway = await GatewayProcess(settings).ready()
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(b"GET /_slow?seconds=0.5 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)  # the request is with the upstream now
        writer.close()  # gone before the upstream answers
        await writer.wait_closed()
        for _ in range(100):
            text = await scrape(port)
            if 'msal_gateway_requests_total{route="proxy",status="499"}' in text:
                break
            await asyncio.sleep(0.05)
        assert sample(text, 'msal_gateway_requests_total{route="proxy",status="499"}') == 1
    finally:
        log = gateway.stop()
    assert '"level": "error"' not in log and '"level": "warning"' not in log, log


async def test_a_cancelled_sign_in_is_a_4xx_logged_at_info(
    launch: Launch, idp: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Cancel at the identity provider is the person's choice: 403 with a way back, an info
    line, no 5xx counted; a provider failure stays a 502."""
    caplog.set_level(logging.INFO, logger="gateway")
    port = free_port()
    running = await launch(metrics_listen=f"127.0.0.1:{port}")
    for error in ("access_denied", "consent_required"):
        idp.fail_authorize(error)
        response = await running.browser.sign_in("/")
        assert response.status == 403
        assert "Sign in again" in await response.text()
    text = await scrape(port)
    assert sample(text, 'msal_gateway_signins_total{outcome="sign_in_not_completed"}') == 2
    assert 'msal_gateway_requests_total{route="auth",status="502"}' not in text
    assert sample(text, 'msal_gateway_requests_total{route="auth",status="403"}') == 2
    mine = [r for r in caplog.records if r.name.startswith("gateway")]
    assert [r for r in mine if r.levelno >= logging.WARNING] == []
    assert any("sign-in not completed" in r.getMessage() for r in mine)
    idp.fail_authorize("server_error")
    assert (await running.browser.sign_in("/")).status == 502
