"""OpenTelemetry tracing, the optional `otel` extra (INSTALL_OTEL says how to get it).

Owns the gateway's trace pipeline and its spans: one TracerProvider per gateway (never the global
one, so several gateways can share a process) with a BatchSpanProcessor and the OTLP/HTTP exporter,
all configured by the standard OTEL_* environment variables, which the SDK reads itself; the aiohttp
middleware that continues the client's W3C trace context and opens one SERVER span per request;
child spans around the slow steps; and the traceparent sent upstream, naming our span as the
upstream's parent.

What a span holds is decided here and nowhere else: the method, the route class (`proxy` or
`auth`), the path without its query, the status code and the public host. Never the query string
(a sign-in callback's holds the authorization code), a cookie, any other header, or an exception's
message (an aiohttp client error's names the upstream URL with its query): only its type.

Nothing from OpenTelemetry is imported at module level, so the gateway runs without the extra.
With tracing off `tracer_from_settings` returns None, the middleware is not installed, and `span`
and `outbound_traceparent` read one context variable and do nothing else. Both work in the
request's task and in the tasks it starts (not in executor threads). Imports nothing from the
gateway.
"""

from __future__ import annotations

import asyncio
import importlib
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

if TYPE_CHECKING:
    from contextvars import Token
    from types import TracebackType

    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span
    from opentelemetry.util.types import AttributeValue

SETTING: Final = "GATEWAY_LOG__TRACING"
# Nothing is published on PyPI yet: the extra comes from a checkout or a built wheel.
INSTALL_OTEL: Final = (
    "install the otel extra (in a checkout: .venv/bin/pip install -e '.[otel]'; from a built "
    "wheel: pip install '<wheel file>[otel]')"
)
DEFAULT_SERVICE_NAME: Final = "msal-gateway"
# RFC 9110's methods and PATCH. Any other token is "_OTHER" (OpenTelemetry's HTTP conventions), so
# a client cannot mint span names.
_KNOWN_METHODS: Final = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
)
_SPAN_NAMES: Final = {
    (method, route): f"{method} {route}"
    for method in (*_KNOWN_METHODS, "_OTHER")
    for route in ("proxy", "auth")
}


class TracingConfigError(Exception):
    """Tracing is switched on but cannot run. The message is one line naming the setting."""

    setting: Final = SETTING


class Tracing:
    """One gateway's trace pipeline. Built by `tracer_from_settings`; `close()` ends it."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._provider = provider
        self._tracer = provider.get_tracer(DEFAULT_SERVICE_NAME)
        # Bound once here, not imported by the per-request code: the extra is optional, so the
        # module cannot import it when loaded, and a request should not pay for an import.
        # Only W3C trace context is read from clients; their baggage is not believed.
        self._extract = TraceContextTextMapPropagator().extract
        self._attach = context.attach
        self._detach = context.detach
        self._current_context = context.get_current
        self._span_of = trace.get_current_span
        self._in_context = trace.set_span_in_context
        self._server_kind = trace.SpanKind.SERVER
        self._internal_kind = trace.SpanKind.INTERNAL
        self._status = trace.Status
        self._error = trace.StatusCode.ERROR
        # The parent of every new trace: an explicit empty context, so that a span leaked into a
        # task's context can never adopt a request.
        self._root = context.Context()

    async def flush(self, timeout_seconds: float = 30.0) -> bool:
        """Export every ended span now; False when the exporter did not finish in time.

        In a thread: the exporter is synchronous, and its collector may be served by this very
        event loop (as in the tests).
        """
        return await asyncio.to_thread(self._provider.force_flush, int(timeout_seconds * 1000))

    async def close(self) -> None:
        """Export what is queued, then stop the exporter's thread. Once, from the app's cleanup.

        With the collector down this waits for the export timeout (OTEL_EXPORTER_OTLP_TIMEOUT).
        """
        await asyncio.to_thread(self._provider.shutdown)

    def _parent(self, request: web.Request) -> Context:
        traceparent = request.headers.get("traceparent")
        if traceparent is None:
            return self._root
        carrier = {"traceparent": traceparent}
        # W3C trace context section 3.3.1.1: several tracestate fields are one list.
        states = request.headers.getall("tracestate", None)
        if states:
            carrier["tracestate"] = ",".join(states)
        return self._extract(carrier, self._root)

    def _fail(self, span: Span, exc: BaseException, *, answered: bool) -> None:
        # aiohttp's HTTPException and the gateway's error tree carry the status they render:
        # below 500 they are answers (a redirect, a sign-in requirement), not faults.
        status = getattr(exc, "status", None)
        if isinstance(status, int):
            if answered:
                span.set_attribute("http.response.status_code", status)
            if status < 500:
                return
        kind = type(exc)
        name = (
            kind.__qualname__
            if kind.__module__ == "builtins"
            else f"{kind.__module__}.{kind.__qualname__}"
        )
        span.set_attribute("error.type", name)
        span.set_status(self._status(self._error, kind.__name__))

    def _start_child(
        self, server: Span, name: str, attributes: dict[str, AttributeValue]
    ) -> tuple[Span, Token[Context]]:
        parent = self._current_context()
        # Nest under the innermost open span of this request; from a task that does not carry the
        # request's context, under its server span.
        if self._span_of(parent).get_span_context().trace_id != server.get_span_context().trace_id:
            parent = self._in_context(server)
        child = self._tracer.start_span(
            name, context=parent, kind=self._internal_kind, attributes=attributes
        )
        return child, self._attach(self._in_context(child, parent))

    def _traceparent(self, server: Span) -> str | None:
        current = server.get_span_context()
        innermost = self._span_of().get_span_context()
        if innermost.trace_id == current.trace_id:
            current = innermost
        if not current.is_valid:  # OTEL_SDK_DISABLED: the caller falls back to its own
            return None
        return f"00-{current.trace_id:032x}-{current.span_id:016x}-{current.trace_flags:02x}"


@dataclass(frozen=True, slots=True)
class _RequestTrace:
    tracing: Tracing
    server: Span


_TRACE: Final = web.RequestKey("gateway_tracing", _RequestTrace)
# The request traced by this task (and the tasks it starts), for `span` and `outbound_traceparent`:
# reading a context variable costs next to nothing when tracing is off, where the request's state
# would raise and catch a KeyError. The pair lives here rather than in _RequestTrace: a trace
# pointing back at its request would make every request a reference cycle for the collector.
_ACTIVE: Final = ContextVar[tuple[web.BaseRequest, _RequestTrace] | None](
    "gateway_tracing_active", default=None
)


def _trace_of(request: web.BaseRequest) -> _RequestTrace | None:
    active = _ACTIVE.get()
    if active is None:  # tracing off, or not the request's task (nor one it started)
        return None
    if active[0] is request:
        return active[1]
    trace: _RequestTrace | None = request.get(_TRACE)
    return trace


# What tracer_from_settings imports: all of them come with the otel extra.
EXTRA_MODULES: Final = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.sdk.resources",
    "opentelemetry.sdk.trace",
    "opentelemetry.sdk.trace.export",
)


def missing_extra() -> str | None:
    """The first module of the otel extra that cannot be imported, or None when all can."""
    for module in EXTRA_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return exc.name or module
    return None


def tracer_from_settings(enabled: bool, service_name: str = DEFAULT_SERVICE_NAME) -> Tracing | None:
    """The trace pipeline when `enabled` (GATEWAY_LOG__TRACING), else None.

    Exporter, sampler, limits and resource come from the OTEL_* environment variables
    (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS,
    OTEL_TRACES_SAMPLER, OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_*, ...). `service_name` is used unless
    OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES names the service. Raises TracingConfigError when
    the `otel` extra is not installed. Opens no connection: the exporter connects when it exports.
    """
    if not enabled:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise TracingConfigError(
            f"{SETTING} is true but OpenTelemetry is not installed ({exc.name or exc}): "
            f"{INSTALL_OTEL}"
        ) from None
    # Resource.create lets explicit attributes override the environment; the operator's wins here.
    named_by_environment = OTELResourceDetector().detect().attributes.get(SERVICE_NAME)
    resource = Resource.create({} if named_by_environment else {SERVICE_NAME: service_name})
    # The app's cleanup closes the provider; an atexit hook would also keep every provider of a
    # test process alive until the process exits.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return Tracing(provider)


def middleware(
    tracing: Tracing,
    *,
    server_address: str,
    server_port: int | None = None,
    auth_paths: tuple[str, ...] = ("/.auth",),
) -> Middleware:
    """One SERVER span per request, named "{method} {route class}". Install it outermost.

    `server_address` (and `server_port`) are the public URL's: the request's Host header is the
    client's word. Outermost, the span covers every other middleware and sees the status the
    error middleware rendered; an exception that escapes still ends the span, marked as an error
    unless it is an answer below 500 (e.g. web.HTTPFound). 5xx answers and cancelled requests
    are errors.
    """
    tracer = tracing._tracer
    server_kind = tracing._server_kind
    attach, detach, in_context = tracing._attach, tracing._detach, tracing._in_context
    server_error = tracing._status(tracing._error)
    fixed: dict[str, AttributeValue] = {"server.address": server_address}
    if server_port is not None:
        fixed["server.port"] = server_port

    @web.middleware
    async def trace_request(request: web.Request, handler: Handler) -> web.StreamResponse:
        method = request.method
        # The same route classes as the request metrics (web/middleware.py).
        route = "auth" if request.path.startswith(auth_paths) else "proxy"
        attributes = fixed.copy()
        attributes["url.path"] = request.rel_url.raw_path  # the path only, never the query
        if method in _KNOWN_METHODS:
            attributes["http.request.method"] = method
        else:
            attributes["http.request.method"] = "_OTHER"
            attributes["http.request.method_original"] = method
            method = "_OTHER"
        server = tracer.start_span(
            _SPAN_NAMES[method, route],
            context=tracing._parent(request),
            kind=server_kind,
            attributes=attributes,
        )
        trace = request[_TRACE] = _RequestTrace(tracing, server)
        active = _ACTIVE.set((request, trace))
        token = attach(in_context(server))
        try:
            response = await handler(request)
        except BaseException as exc:  # CancelledError included: the span must still end
            tracing._fail(server, exc, answered=True)
            raise
        else:
            status = response.status
            server.set_attribute("http.response.status_code", status)
            if status >= 500:
                server.set_attribute("error.type", str(status))
                server.set_status(server_error)
            return response
        finally:
            detach(token)
            _ACTIVE.reset(active)
            server.end()

    return trace_request


def outbound_traceparent(request: web.Request) -> str | None:
    """The W3C traceparent for the upstream request: this request's trace, with the innermost open
    span of this request (a `span(...)`, else the SERVER span) as the upstream's parent.

    None when the middleware did not run (tracing off): the caller keeps its own traceparent.
    Its sampled flag is the sampler's decision. The client's `tracestate` passes upstream as it is.
    """
    trace = _trace_of(request)
    return None if trace is None else trace.tracing._traceparent(trace.server)


class ChildSpan:
    """An INTERNAL span under the request's current span while the `async with` block runs;
    nothing at all when tracing is off. An exception in the block marks it as an error (by type
    only) unless it is an answer below 500; the exception is never swallowed."""

    __slots__ = ("_attributes", "_name", "_span", "_token", "_trace")

    def __init__(
        self, trace: _RequestTrace | None, name: str, attributes: dict[str, AttributeValue]
    ) -> None:
        self._trace = trace
        self._name = name
        self._attributes = attributes
        self._span: Span | None = None
        self._token: Token[Context] | None = None

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Record an outcome found inside the block (e.g. a cache hit). Never a secret."""
        if self._span is not None:
            self._span.set_attribute(key, value)

    async def __aenter__(self) -> ChildSpan:
        if self._trace is not None:
            self._span, self._token = self._trace.tracing._start_child(
                self._trace.server, self._name, self._attributes
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._span is None:
            return
        assert self._trace is not None and self._token is not None
        if exc is not None:
            self._trace.tracing._fail(self._span, exc, answered=False)
        self._trace.tracing._detach(self._token)
        self._span.end()


def span(request: web.Request, name: str, **attributes: AttributeValue) -> ChildSpan:
    """`async with span(request, "session.load", store="redis"):` times one step of a request.

    Attribute names with dots go through a mapping: `**{"db.system.name": "redis"}`.
    """
    trace = _trace_of(request)
    return _OFF if trace is None else ChildSpan(trace, name, attributes)


_OFF: Final = ChildSpan(None, "", {})  # never entered with a span: shared by every untraced call
