"""Prometheus metrics, served on their own listener (GATEWAY_METRICS_LISTEN), never under /.auth.

A leaf module: the middleware, the sign-in path, the refresher and the store record into one
Metrics object that app.py builds; each gateway has its own registry, so tests can run several in
one process.

A request's latency is split in two: the gateway's own time (from arrival until the request is sent
upstream, or until the gateway answers by itself) and the upstream's time (from sending until the
upstream's response head arrives). Streaming the body afterwards belongs to neither; the total
duration histogram includes it.

The four per-request metrics are added up in plain Python and written to prometheus_client at
most FLUSH_SECONDS later, and at once before this process serves a scrape: each prometheus
update takes a lock, and with several workers also writes a shared memory-mapped file, which
cost about 6 µs a request, a twentieth of the whole hot path.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from gateway.telemetry import build_info

LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# The gateway's own work is meant to take tens of microseconds: finer buckets at the low end.
OVERHEAD_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
)  # fmt: skip
STORE_OPERATIONS: Final = ("get", "set", "replace", "take", "delete", "ping", "lock")
FLUSH_SECONDS: Final = 0.5


class Timing:
    """When a request arrived, was sent upstream, and got the upstream's response head."""

    __slots__ = ("answered", "sent", "started")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.sent: float | None = None
        self.answered: float | None = None

    def upstream_sent(self) -> None:
        self.sent = time.perf_counter()

    def upstream_answered(self) -> None:
        self.answered = time.perf_counter()


# Where a request keeps its Timing (gateway/keys.py re-exports it as TIMING): defined here so
# that the access log (telemetry/logs.py) can read it.
TIMING_KEY: Final = web.RequestKey("timing", Timing)


class _PendingHistogram:
    """One histogram child's observations since the last flush, by bucket.

    Written through the child's per-bucket values (`_upper_bounds`, `_buckets`, `_sum`), the
    layout prometheus_client's Histogram has always had; it has no public call that adds several
    observations at once. tests/unit/gateway/telemetry/test_metrics.py checks the exposition
    against exact counts."""

    __slots__ = ("_bounds", "_child", "_counts", "_total")

    def __init__(self, child: Histogram) -> None:
        self._child = child
        self._bounds: list[float] = child._upper_bounds  # ends with +Inf
        self._counts = [0] * len(self._bounds)
        self._total = 0.0

    def add(self, value: float) -> None:
        # The first bucket whose bound is >= value, as Histogram.observe() picks it.
        self._counts[bisect_left(self._bounds, value)] += 1
        self._total += value

    def flush(self) -> None:
        counts = self._counts
        for index, count in enumerate(counts):
            if count:
                self._child._buckets[index].inc(count)
                counts[index] = 0
        if self._total:
            self._child._sum.inc(self._total)
            self._total = 0.0


class _PendingRequests:
    """The requests of one (route, status) since the last flush."""

    __slots__ = ("count", "counter", "duration", "gateway_duration")

    def __init__(self, counter: Counter, duration: Histogram, gateway_duration: Histogram) -> None:
        self.count = 0
        self.counter = counter
        self.duration = _PendingHistogram(duration)
        self.gateway_duration = _PendingHistogram(gateway_duration)

    def flush(self) -> None:
        if self.count:
            self.counter.inc(self.count)
            self.count = 0
        self.duration.flush()
        self.gateway_duration.flush()


class Metrics:
    def __init__(self) -> None:
        # By (route, status): labels() costs more than the update itself.
        self._pending: dict[tuple[str, int], _PendingRequests] = {}
        self._flush_timer: asyncio.TimerHandle | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "msal_gateway_requests",
            "Requests answered, by route class (proxy, auth) and status code.",
            ["route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "msal_gateway_request_duration_seconds",
            "Time to handle a request, streaming included, by route class.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.gateway_duration = Histogram(
            "msal_gateway_gateway_duration_seconds",
            "The gateway's own time per request: until it is sent upstream or answered here.",
            ["route"],
            buckets=OVERHEAD_BUCKETS,
            registry=self.registry,
        )
        self.upstream_duration = Histogram(
            "msal_gateway_upstream_duration_seconds",
            "Time from sending a request upstream until the upstream's response head arrived.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._pending_upstream = _PendingHistogram(self.upstream_duration)
        self.open_websockets = Gauge(
            "msal_gateway_open_websockets",
            "WebSocket connections being relayed now.",
            registry=self.registry,
            multiprocess_mode="livesum",  # with several workers: the sum over live ones
        )
        self.client_connections = Gauge(
            "msal_gateway_client_connections",
            "Client connections open now.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.upstream_connections = Gauge(
            "msal_gateway_upstream_connections",
            "Connections to the upstream open now (at most GATEWAY_PROXY__MAX_CONNECTIONS per "
            "process).",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.upstream_waits = Counter(
            "msal_gateway_upstream_waits",
            "Requests that waited for a connection to the upstream because "
            "GATEWAY_PROXY__MAX_CONNECTIONS were in use.",
            registry=self.registry,
        )
        self.client_connections_closed = Counter(
            "msal_gateway_client_connections_closed",
            "Client connections the gateway closed itself, by reason: idle_at_limit (the longest "
            "idle, to make room), refused_at_limit (every connection busy), head_timeout.",
            ["reason"],
            registry=self.registry,
        )
        self.store_operations = Counter(
            "msal_gateway_store_operations",
            "Session-store operations, by operation and outcome (ok or error).",
            ["operation", "outcome"],
            registry=self.registry,
        )
        self.store_duration = Histogram(
            "msal_gateway_store_operation_duration_seconds",
            "Time per session-store operation (a lock: until it was acquired).",
            ["operation"],
            buckets=OVERHEAD_BUCKETS,
            registry=self.registry,
        )
        self.signins = Counter(
            "msal_gateway_signins",
            "Completed sign-in callbacks, by outcome (success or an error code).",
            ["outcome"],
            registry=self.registry,
        )
        self.refreshes = Counter(
            "msal_gateway_token_refreshes",
            "Token refreshes that reached MSAL, by outcome (success, an error code, or "
            "kept_after_refusal: refused early, the current token kept while it is good).",
            ["outcome"],
            registry=self.registry,
        )
        self.store_errors = Counter(
            "msal_gateway_store_errors",
            "Requests refused because the session store was unreachable.",
            registry=self.registry,
        )
        self.forwarded_without_identity = Counter(
            "msal_gateway_forwarded_without_identity",
            "Signed-in requests forwarded without X-MS-CLIENT-PRINCIPAL (a canary: must stay 0).",
            registry=self.registry,
        )
        self.build_info = Gauge(
            "msal_gateway_build_info",
            "Always 1; its labels name the running gateway's version and its runtime's.",
            list(build_info.components()),
            registry=self.registry,
            multiprocess_mode="max",  # the same labels and value in every worker
        )
        self.build_info.labels(**build_info.components()).set(1)
        self.credential_expiry = Gauge(
            "msal_gateway_client_credential_expiry_timestamp_seconds",
            "When the client credential stops working (Unix time), by kind: a certificate's "
            "notAfter, or the secret's expiry as GATEWAY_CLIENT_SECRET_EXPIRES states it.",
            ["kind"],
            registry=self.registry,
            multiprocess_mode="max",  # the same files and setting in every worker
        )
        self.upstream_errors = Counter(
            "msal_gateway_upstream_errors",
            "Requests the upstream could not answer, by kind.",
            ["kind"],
            registry=self.registry,
        )

    def observe(self, route: str, status: int, timing: Timing) -> None:
        """One answered request: its count, total time and the gateway/upstream split."""
        now = time.perf_counter()
        pending = self._pending.get((route, status))
        if pending is None:
            pending = self._pending[(route, status)] = _PendingRequests(
                self.requests.labels(route, str(status)),
                self.duration.labels(route),
                self.gateway_duration.labels(route),
            )
        pending.count += 1
        pending.duration.add(now - timing.started)
        own_until = timing.sent if timing.sent is not None else now
        pending.gateway_duration.add(own_until - timing.started)
        if timing.sent is not None and timing.answered is not None:
            self._pending_upstream.add(timing.answered - timing.sent)
        if self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Write the pending request metrics to prometheus_client."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        for pending in self._pending.values():
            pending.flush()
        self._pending_upstream.flush()

    async def serve(self, request: web.Request) -> web.Response:
        self.flush()
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self.serve)
        return app
