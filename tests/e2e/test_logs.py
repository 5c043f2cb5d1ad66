"""Log lines operators can search (issue 15 item 10), from a real gateway process: JSON keys follow
the Elastic Common Schema; the access line names the client as resolved through trusted proxies,
the signed-in user's key, the user agent, the body bytes and the application's share of the
time; audit lines name the client too; the text format shows no "[None]"."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from support.browser import API
from support.gateway import GatewayProcess, session_cookie, settings_for
from support.threaded import ThreadedServer

ALICE_KEY_PREFIX = "0b7e2c1d-4a5f-4e3b-8c9d-1e2f3a4b5c6d."


async def served_lines(idp: Any, upstream: ThreadedServer, log_format: str) -> str:
    settings = settings_for(
        idp, upstream.url, proxy={"trusted_proxies": "127.0.0.1/32"}, log={"format": log_format}
    )
    gateway = await GatewayProcess(settings).ready()
    try:
        cookie = await session_cookie(gateway.url, idp)
        headers = {
            **API,
            "Cookie": f"__Host-msal-gateway={cookie}",
            "User-Agent": "log-test/1.0",
            "X-Forwarded-For": "203.0.113.7",
        }
        async with (
            aiohttp.ClientSession() as client,
            client.get(gateway.url + "/reports?secret=1", headers=headers) as response,
        ):
            assert response.status == 200
            await response.read()
    finally:
        log = gateway.stop()
    return log


async def test_json_lines_follow_ecs_and_name_who_and_what(
    idp: Any, upstream: ThreadedServer
) -> None:
    log = await served_lines(idp, upstream, "json")
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert lines and all(
        {"@timestamp", "log.level", "log.logger", "message"} <= set(x) for x in lines
    )
    [access] = [x for x in lines if x.get("url.path") == "/reports"]
    assert access["event.action"] == "access"
    assert access["http.request.method"] == "GET"
    assert access["http.response.status_code"] == 200
    assert access["client.address"] == "203.0.113.7"  # through the trusted proxy
    assert access["user.id"].startswith(ALICE_KEY_PREFIX)
    assert access["user_agent.original"] == "log-test/1.0"
    assert access["http.response.body.bytes"] > 0
    assert 0 <= access["upstream_ms"] <= access["duration_ms"]
    assert len(access["http.request.id"]) == 32
    assert "secret" not in json.dumps(access)  # never the query
    [signed_in] = [x for x in lines if x.get("event.action") == "sign_in"]
    assert signed_in["client.address"] == "127.0.0.1"
    assert signed_in["user.id"].startswith(ALICE_KEY_PREFIX)


async def test_text_lines_show_no_empty_request_id(idp: Any, upstream: ThreadedServer) -> None:
    log = await served_lines(idp, upstream, "text")
    assert "[None]" not in log
    assert " GET /reports 200" in log
    started = next(line for line in log.splitlines() if "listening on" in line)
    assert "[" not in started.split("gateway.server.serve", 1)[1].split("listening", 1)[0]
