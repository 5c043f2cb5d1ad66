"""A loopback OpenTelemetry collector for tracing tests: a small aiohttp app that keeps the raw
protobuf bodies the SDK's OTLP/HTTP exporter POSTs to /v1/traces, so tests read exactly what a
real collector would receive. Registered as a plugin (tests/conftest.py): the `collector` and
`otel_environment` fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from pytest_aiohttp import AiohttpServer

# Python source that makes OpenTelemetry impossible to import (a sitecustomize.py, or run before
# the gateway), as in an image built without the otel extra.
BLOCK_OPENTELEMETRY: Final = """
import sys

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
"""


@dataclass
class Collector:
    """What an OTLP/HTTP collector received on POST /v1/traces."""

    url: str
    bodies: list[bytes] = field(default_factory=list)

    def resource_spans(self) -> list[tuple[dict[str, object], Span]]:
        found: list[tuple[dict[str, object], Span]] = []
        for body in self.bodies:
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    found.extend((resource, one) for one in scope_spans.spans)
        return found

    def spans(self) -> list[Span]:
        return [one for _, one in self.resource_spans()]

    def server_spans(self) -> list[Span]:
        return [one for one in self.spans() if one.kind == Span.SpanKind.SPAN_KIND_SERVER]


def attributes(pairs: Iterable[KeyValue]) -> dict[str, object]:
    """OTLP KeyValue list -> {key: value}."""
    values: dict[str, object] = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        assert kind is not None
        values[pair.key] = getattr(pair.value, kind)
    return values


@pytest.fixture
async def collector(aiohttp_server: AiohttpServer) -> Collector:
    async def receive(request: web.Request) -> web.Response:
        received.bodies.append(await request.read())
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    app = web.Application()
    app.router.add_post("/v1/traces", receive)
    server = await aiohttp_server(app)
    received = Collector(str(server.make_url("/v1/traces")))
    return received


@pytest.fixture
def otel_environment(monkeypatch: pytest.MonkeyPatch, collector: Collector) -> None:
    """Only the variables a test sets: the machine's OTEL_* settings must not leak in."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", collector.url)
