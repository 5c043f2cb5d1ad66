"""OpenTelemetry tracing (gateway.telemetry.tracing) exported over real OTLP/HTTP to a loopback
collector.

The collector is a small aiohttp app that keeps the raw protobuf bodies the SDK's exporter POSTs,
so the assertions read exactly what a real collector would receive, bytes included.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from pytest_aiohttp import AiohttpClient
from support.otel import BLOCK_OPENTELEMETRY as OTEL_BLOCK
from support.otel import Collector, attributes
from support.paths import REPO

from gateway.telemetry.tracing import (
    INSTALL_OTEL,
    Tracing,
    middleware,
    outbound_traceparent,
    span,
    tracer_from_settings,
)

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
SAMPLED = 0x01  # W3C trace-flags bit


@pytest.fixture
async def tracing(otel_environment: None) -> AsyncIterator[Tracing]:
    pipeline = tracer_from_settings(True, "gateway-under-test")
    assert pipeline is not None
    yield pipeline
    await pipeline.close()


async def upstream_like(request: web.Request) -> web.Response:
    """Stands for the proxy handler: a child span around the upstream call, which carries
    outbound_traceparent; reports both traceparents so the test can compare them to the spans."""
    before = outbound_traceparent(request)
    async with span(request, "upstream", **{"gateway.step": "forward"}) as step:
        inside = outbound_traceparent(request)
        step.set_attribute("gateway.outcome", "ok")
    return web.json_response({"before": before, "inside": inside})


async def server_error(request: web.Request) -> web.Response:
    return web.Response(status=500, text="upstream broke")


async def crash(request: web.Request) -> web.Response:
    async with span(request, "session.load"):
        raise RuntimeError("https://upstream.internal/x?code=SECRET4")


async def forbidden(request: web.Request) -> web.Response:
    raise web.HTTPForbidden()


def traced_app(tracing: Tracing, *routes: tuple[str, Handler]) -> web.Application:
    app = web.Application(
        middlewares=[middleware(tracing, server_address="app.contoso.com", server_port=443)]
    )
    for path, handler in routes:
        app.router.add_get(path, handler)
    app.router.add_get("/fail", server_error)
    app.router.add_get("/crash", crash)
    app.router.add_get("/forbidden", forbidden)
    app.router.add_route("*", "/{tail:.*}", upstream_like)
    return app


async def exported(tracing: Tracing, collector: Collector, servers: int) -> list[Span]:
    """Flush until `servers` SERVER spans arrived (a cancelled handler ends a little later)."""
    for _ in range(100):
        assert await tracing.flush(timeout_seconds=10)
        if len(collector.server_spans()) >= servers:
            break
        await asyncio.sleep(0.05)
    return collector.spans()


async def test_one_server_span_per_request_with_its_attributes(
    tracing: Tracing, collector: Collector, aiohttp_client: AiohttpClient
) -> None:
    client = await aiohttp_client(traced_app(tracing))
    assert (await client.get("/orders/7?page=2")).status == 200
    assert (await client.post("/.auth/me", data=b"{}")).status == 200
    assert (await client.request("PURGE", "/cache")).status == 200

    spans = await exported(tracing, collector, 3)
    servers = collector.server_spans()
    assert [one.name for one in servers] == ["GET proxy", "POST auth", "_OTHER proxy"]
    assert attributes(servers[0].attributes) == {
        "http.request.method": "GET",
        "url.path": "/orders/7",
        "server.address": "app.contoso.com",
        "server.port": 443,
        "http.response.status_code": 200,
    }
    assert attributes(servers[1].attributes)["url.path"] == "/.auth/me"
    assert attributes(servers[2].attributes)["http.request.method"] == "_OTHER"
    assert attributes(servers[2].attributes)["http.request.method_original"] == "PURGE"
    for server in servers:
        assert server.status.code == Status.StatusCode.STATUS_CODE_UNSET
    resources = {str(resource["service.name"]) for resource, _ in collector.resource_spans()}
    assert resources == {"gateway-under-test"}

    children = [one for one in spans if one.kind == Span.SpanKind.SPAN_KIND_INTERNAL]
    assert [one.name for one in children] == ["upstream"] * 3
    assert attributes(children[0].attributes) == {
        "gateway.step": "forward",
        "gateway.outcome": "ok",
    }


async def test_client_trace_is_continued_and_our_span_is_the_upstreams_parent(
    tracing: Tracing, collector: Collector, aiohttp_client: AiohttpClient
) -> None:
    client = await aiohttp_client(traced_app(tracing))
    headers = [
        ("traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"),
        ("tracestate", "congo=t61rcWkgMzE"),
        ("tracestate", "rojo=00f067aa0ba902b7"),
    ]
    answer = await (await client.get("/x", headers=headers)).json()

    spans = await exported(tracing, collector, 1)
    (server,) = collector.server_spans()
    (child,) = (one for one in spans if one.name == "upstream")
    assert server.trace_id.hex() == CLIENT_TRACE
    assert server.parent_span_id.hex() == CLIENT_SPAN
    assert server.trace_state == "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    assert child.trace_id.hex() == CLIENT_TRACE
    assert child.parent_span_id == server.span_id
    assert answer["before"] == f"00-{CLIENT_TRACE}-{server.span_id.hex()}-01"
    assert answer["inside"] == f"00-{CLIENT_TRACE}-{child.span_id.hex()}-01"


async def test_concurrent_steps_each_parent_their_own_upstream_call(
    tracing: Tracing, collector: Collector, aiohttp_client: AiohttpClient
) -> None:
    async def step(request: web.Request, name: str) -> str | None:
        async with span(request, name):
            await asyncio.sleep(0.01)  # both steps are open at once
            return outbound_traceparent(request)

    async def fan_out(request: web.Request) -> web.Response:
        first, second = await asyncio.gather(step(request, "first"), step(request, "second"))
        return web.json_response({"first": first, "second": second})

    client = await aiohttp_client(traced_app(tracing, ("/fan-out", fan_out)))
    answer = await (await client.get("/fan-out")).json()

    spans = await exported(tracing, collector, 1)
    (server,) = collector.server_spans()
    for name in ("first", "second"):
        (child,) = (one for one in spans if one.name == name)
        assert child.parent_span_id == server.span_id
        assert answer[name].split("-")[1:3] == [server.trace_id.hex(), child.span_id.hex()]


async def test_without_a_client_trace_a_new_one_starts(
    tracing: Tracing, collector: Collector, aiohttp_client: AiohttpClient
) -> None:
    client = await aiohttp_client(traced_app(tracing))
    malformed = {"traceparent": f"00-{CLIENT_TRACE}-{'0' * 16}-01"}  # an all-zero span id
    first = await (await client.get("/a")).json()
    second = await (await client.get("/b", headers=malformed)).json()

    await exported(tracing, collector, 2)
    servers = collector.server_spans()
    assert len(servers) == 2
    for server, answer in zip(servers, (first, second), strict=True):
        assert server.parent_span_id == b""
        assert server.trace_id.hex() != CLIENT_TRACE
        version, trace_id, span_id, flags = answer["before"].split("-")
        assert (version, trace_id, span_id) == ("00", server.trace_id.hex(), server.span_id.hex())
        # Sampled; our own trace ids also get W3C level 2's "random" flag (0x02).
        assert int(flags, 16) & SAMPLED
    assert servers[0].trace_id != servers[1].trace_id


async def test_no_query_cookie_or_credential_is_exported(
    tracing: Tracing, collector: Collector, aiohttp_client: AiohttpClient
) -> None:
    client = await aiohttp_client(traced_app(tracing))
    secrets = {"Cookie": "x=SECRET2", "Authorization": "Bearer SECRET3"}
    for target in ("/.auth/login/aad/callback?code=SECRET", "/app?code=SECRET", "/crash"):
        await (await client.get(target, headers=secrets)).read()

    await exported(tracing, collector, 3)
    raw = b"".join(collector.bodies)
    assert b"/.auth/login/aad/callback" in raw  # the spans were exported...
    assert b"SECRET" not in raw  # ...and hold none of SECRET, SECRET2, SECRET3, SECRET4


async def test_errors_are_marked_by_status_and_type(
    tracing: Tracing, collector: Collector, aiohttp_client: AiohttpClient
) -> None:
    client = await aiohttp_client(traced_app(tracing))
    assert (await client.get("/fail")).status == 500
    assert (await client.get("/crash")).status == 500
    assert (await client.get("/forbidden")).status == 403

    spans = await exported(tracing, collector, 3)
    failed, crashed, refused = collector.server_spans()
    assert failed.status.code == Status.StatusCode.STATUS_CODE_ERROR
    assert attributes(failed.attributes)["http.response.status_code"] == 500
    assert attributes(failed.attributes)["error.type"] == "500"
    assert crashed.status.code == Status.StatusCode.STATUS_CODE_ERROR
    assert attributes(crashed.attributes)["error.type"] == "RuntimeError"
    (load,) = (one for one in spans if one.name == "session.load")
    assert load.status.code == Status.StatusCode.STATUS_CODE_ERROR
    assert load.parent_span_id == crashed.span_id
    # A 4xx is the client's problem, not the server's (OpenTelemetry HTTP conventions).
    assert refused.status.code == Status.StatusCode.STATUS_CODE_UNSET
    assert attributes(refused.attributes)["http.response.status_code"] == 403
    assert "error.type" not in attributes(refused.attributes)


async def test_a_cancelled_request_still_ends_its_span(
    tracing: Tracing, collector: Collector, aiohttp_client: AiohttpClient
) -> None:
    started = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    app = traced_app(tracing, ("/hang", hang))
    client = await aiohttp_client(app, server_kwargs={"handler_cancellation": True})

    async def call() -> None:
        async with client.get("/hang") as response:
            await response.read()

    caller = asyncio.create_task(call())
    await started.wait()
    caller.cancel()  # the client goes away; the server cancels the handler
    with pytest.raises(asyncio.CancelledError):
        await caller

    await exported(tracing, collector, 1)
    (server,) = collector.server_spans()
    assert server.name == "GET proxy"
    assert server.status.code == Status.StatusCode.STATUS_CODE_ERROR
    assert attributes(server.attributes)["error.type"] == "asyncio.exceptions.CancelledError"
    assert server.end_time_unix_nano >= server.start_time_unix_nano


async def test_the_environment_configures_sampler_and_service_name(
    otel_environment: None,
    monkeypatch: pytest.MonkeyPatch,
    collector: Collector,
    aiohttp_client: AiohttpClient,
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "named-by-operator")
    pipeline = tracer_from_settings(True, "gateway-under-test")
    assert pipeline is not None
    client = await aiohttp_client(traced_app(pipeline))
    await (await client.get("/x")).read()
    await pipeline.close()  # close() exports what is queued
    assert {str(r["service.name"]) for r, _ in collector.resource_spans()} == {"named-by-operator"}

    collector.bodies.clear()
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    unsampled = tracer_from_settings(True)
    assert unsampled is not None
    try:
        client = await aiohttp_client(traced_app(unsampled))
        answer = await (await client.get("/x")).json()
        assert await unsampled.flush()
    finally:
        await unsampled.close()
    assert collector.spans() == []
    # Not recorded, but the upstream still sees one well-formed trace, marked not sampled.
    before, inside = (answer[key].split("-") for key in ("before", "inside"))
    assert before[1] == inside[1] != "0" * 32
    assert before[2] != inside[2]
    assert not int(before[3], 16) & SAMPLED
    assert not int(inside[3], 16) & SAMPLED


async def test_tracing_off_is_none_and_the_helpers_do_nothing(
    aiohttp_client: AiohttpClient,
) -> None:
    assert tracer_from_settings(False, "gateway-under-test") is None
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", upstream_like)
    client = await aiohttp_client(app)
    assert await (await client.get("/x")).json() == {"before": None, "inside": None}


BLOCK_OPENTELEMETRY = (
    OTEL_BLOCK
    + """import gateway.app
from gateway.telemetry.tracing import TracingConfigError, tracer_from_settings

assert tracer_from_settings(False) is None
try:
    tracer_from_settings(True)
except TracingConfigError as exc:
    print(exc)
"""
)


def test_tracing_without_the_extra_is_a_configuration_error() -> None:
    """A fresh interpreter in which OpenTelemetry cannot be imported, as without the extra."""
    run = subprocess.run(
        [sys.executable, "-c", BLOCK_OPENTELEMETRY],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == (
        "GATEWAY_LOG__TRACING is true but OpenTelemetry is not installed (opentelemetry): "
        f"{INSTALL_OTEL}\n"
    )
