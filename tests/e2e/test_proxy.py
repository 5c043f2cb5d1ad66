"""End to end: the hot path. Forwarding facts, streaming, upstream failures, WebSockets and due
token refreshes, through the real gateway to the real echo upstream. What spoofed headers and
ambiguous paths get is in tests/security (test_header_spoofing.py, test_path_matching.py)."""

from __future__ import annotations

import asyncio
import hashlib
import io
from typing import Any

import aiohttp
import pytest
from support.browser import API
from support.fixtures import Launch, Running, signed_in
from support.ports import free_port
from support.upstream import upstream_headers


async def test_host_is_the_public_host_and_forwarding_facts_set(gateway: Running) -> None:
    await signed_in(gateway)
    response = await gateway.browser.get("/x", headers={"Host": "evil.example", **API})
    seen = upstream_headers(await response.json())
    assert seen["host"] == ["app.test"]  # never the client's Host (host-header poisoning)
    assert seen["x-forwarded-host"] == ["app.test"]
    assert response.headers["X-Request-Id"] == seen["x-request-id"][0]


async def test_upstream_redirects_and_cookies_pass_through(gateway: Running) -> None:
    await signed_in(gateway)
    response = await gateway.browser.get("/_redirect", headers=API)
    assert response.status == 302
    assert response.headers["Location"] == "/elsewhere?from=upstream"
    response = await gateway.browser.get("/_cookie", headers=API)
    cookies = response.headers.getall("Set-Cookie")
    assert any(c.startswith("app_pref=dark") for c in cookies)
    assert any(c.startswith("app_lang=en") for c in cookies)
    assert not any(c.startswith("__Host-msal-gateway") for c in cookies)
    # The app's own cookies reach it; the gateway's do not.
    echoed = upstream_headers(await (await gateway.browser.get("/x", headers=API)).json())
    assert "app_pref=dark" in echoed["cookie"][0]
    assert gateway.settings.session_cookie_name not in echoed["cookie"][0]


async def test_request_and_response_bodies_stream(gateway: Running) -> None:
    await signed_in(gateway)
    payload = bytes(range(256)) * 4096 * 4  # 4 MiB
    response = await gateway.browser.session.post(
        gateway.url + "/upload", data=io.BytesIO(payload), headers=API
    )
    body = await response.json()
    assert body["body_length"] == len(payload)
    assert body["body_sha256"] == hashlib.sha256(payload).hexdigest()
    response = await gateway.browser.get("/_bytes?n=3000000", headers=API)
    assert len(await response.read()) == 3_000_000
    response = await gateway.browser.get("/_bytes?n=1000&length=1", headers=API)
    assert response.headers["Content-Length"] == "1000"


async def test_upstream_down_is_502(launch: Launch) -> None:
    running = await launch(upstream=f"http://127.0.0.1:{free_port()}", proxy={"public_paths": "/"})
    response = await running.browser.get("/anything", headers=API)
    assert response.status == 502
    assert (await response.json())["error"] == "upstream_unavailable"


async def test_upstream_timeout_is_504(launch: Launch) -> None:
    running = await launch(proxy={"public_paths": "/", "read_timeout_seconds": 0.3})
    response = await running.browser.get("/_slow?seconds=2", headers=API)
    assert response.status == 504
    page = await running.browser.get("/_slow?seconds=2")
    assert page.status == 504
    assert "did not answer" in await page.text()


async def test_websocket_is_authenticated_and_relayed(gateway: Running) -> None:
    anonymous = await gateway.browser.session.get(
        gateway.url + "/_ws",
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            **API,
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        },
    )
    await anonymous.read()
    assert anonymous.status == 401
    await signed_in(gateway)
    async with gateway.browser.session.ws_connect(
        gateway.url + "/_ws", protocols=("echo.v1",)
    ) as ws:
        assert ws.protocol == "echo.v1"
        hello = await ws.receive_json(timeout=5)
        assert hello == {"user": "alice@contoso.example"}
        await ws.send_str("ping")
        assert (await ws.receive(timeout=5)).data == "echo:ping"
        await ws.send_bytes(b"abc")
        assert (await ws.receive(timeout=5)).data == b"cba"
        await ws.send_str("close")
        message = await ws.receive(timeout=5)
        assert message.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 4001


async def test_refresh_is_single_flight_and_persisted(launch: Launch, idp: Any) -> None:
    running = await launch(scopes="api://upstream/read")
    await signed_in(running)
    first = upstream_headers(await (await running.browser.get("/t", headers=API)).json())
    idp.clear_log()
    await asyncio.sleep(0)
    response = await running.browser.session.post(running.url + "/.auth/refresh", headers=API)
    assert response.status == 200, await response.text()
    assert (await response.json())["status"] == "refreshed"
    second = upstream_headers(await (await running.browser.get("/t", headers=API)).json())
    assert first["authorization"] != second["authorization"]
    grants = [r.form.get("grant_type") for r in idp.token_requests()]
    assert grants == ["refresh_token"]


async def test_due_token_is_refreshed_once_for_concurrent_requests(
    launch: Launch, idp: Any
) -> None:
    idp.set_lifetimes(refresh_in=1)  # the token is due one second after it is issued
    running = await launch(scopes="api://upstream/read")
    await signed_in(running)
    first = upstream_headers(await (await running.browser.get("/t", headers=API)).json())
    idp.clear_log()
    await asyncio.sleep(1.2)
    # The renewed token is not due at once (refresh_in=1 again would make it due within a second
    # of the renewal, MSAL counting from the whole second it was cached in).
    idp.set_lifetimes()
    answers = await asyncio.gather(
        *(running.browser.get(f"/t/{i}", headers=API) for i in range(20))
    )
    tokens = {upstream_headers(await a.json())["authorization"][0] for a in answers}
    assert len(tokens) == 1 and tokens != set(first["authorization"])
    grants = [r.form.get("grant_type") for r in idp.token_requests()]
    assert grants == ["refresh_token"]


@pytest.mark.threat("F-13")
async def test_revoked_refresh_token_keeps_the_valid_token_then_ends_the_session(
    launch: Launch, idp: Any
) -> None:
    idp.set_lifetimes(refresh_in=1)
    running = await launch(scopes="api://upstream/read")
    await signed_in(running)
    before = upstream_headers(await (await running.browser.get("/t", headers=API)).json())
    idp.revoke_refresh_tokens("alice")
    idp.clear_log()
    await asyncio.sleep(1.2)
    for _ in range(5):
        # The early renewal is refused, but the access token is still valid for long: it is kept
        # (as MSAL keeps its cached one), and the gateway waits before trying again instead of
        # calling the provider on every request.
        answer = await running.browser.get("/t", headers=API)
        assert answer.status == 200
        assert upstream_headers(await answer.json())["authorization"] == before["authorization"]
    assert [r.form.get("grant_type") for r in idp.token_requests()] == ["refresh_token"]
    forced = await running.browser.session.post(running.url + "/.auth/refresh", headers=API)
    await forced.read()
    assert forced.status == 401  # invalid_grant: the session is over
    assert (await running.browser.get("/t", headers=API)).status == 401
    page = await running.browser.get("/t")
    assert page.status == 302 and page.headers["Location"].startswith("/.auth/login/aad")


async def test_websocket_refused_by_the_application_keeps_its_status(gateway: Running) -> None:
    await signed_in(gateway)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await gateway.browser.session.ws_connect(gateway.url + "/_ws_forbidden")
    assert refused.value.status == 403
