"""Tracing wired into the gateway: a signed-in request through a real gateway and upstream produces
a SERVER span with its session and upstream steps, and the upstream's traceparent names the
gateway's upstream step as its parent; without tracing, a W3C trace context is kept or started."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from support.browser import API
from support.fixtures import Launch, Running, signed_in
from support.otel import Collector, attributes
from support.upstream import upstream_headers

TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


async def spans_of(collector: Collector, name: str) -> list[Span]:
    for _ in range(200):  # the batch processor exports every 50 ms here
        if any(one.name == name for one in collector.spans()):
            break
        await asyncio.sleep(0.05)
    return collector.spans()


async def test_the_upstream_call_is_a_child_of_the_request_span(
    launch: Launch, collector: Collector, otel_environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    running = await launch(log={"tracing": True}, scopes="api://upstream/read")
    await signed_in(running)
    collector.bodies.clear()
    response = await running.browser.get("/orders/7?secret=no", headers=API)
    assert response.status == 200
    [traceparent] = upstream_headers(await response.json())["traceparent"]
    _, trace_id, parent_id, _ = traceparent.split("-")
    spans = await spans_of(collector, "GET proxy")
    [server] = [
        one
        for one in spans
        if one.name == "GET proxy" and attributes(one.attributes).get("url.path") == "/orders/7"
    ]
    children = {one.name: one for one in spans if one.parent_span_id == server.span_id}
    assert {"session", "upstream"} <= set(children)
    assert server.trace_id.hex() == trace_id
    assert children["upstream"].span_id.hex() == parent_id
    assert all(b"secret=no" not in body for body in collector.bodies)


async def test_without_the_setting_nothing_is_exported(
    launch: Launch, collector: Collector, otel_environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    running = await launch(proxy={"public_paths": "/"})
    assert (await running.browser.get("/x", headers=API)).status == 200
    await asyncio.sleep(0.3)
    assert collector.bodies == []


async def test_trace_context_is_kept_or_started(gateway: Running, idp: Any) -> None:
    await signed_in(gateway)
    given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    kept = upstream_headers(
        await (await gateway.browser.get("/x", headers={**API, "traceparent": given})).json()
    )
    assert kept["traceparent"] == [given]
    for bad in ("garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01"):
        fresh = upstream_headers(
            await (await gateway.browser.get("/x", headers={**API, "traceparent": bad})).json()
        )
        assert fresh["traceparent"] != [bad] and TRACEPARENT.match(fresh["traceparent"][0])
    started = upstream_headers(await (await gateway.browser.get("/x", headers=API)).json())
    assert TRACEPARENT.match(started["traceparent"][0])
