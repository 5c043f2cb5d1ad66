"""Prometheus metrics, served on their own listener (GATEWAY_METRICS_LISTEN), never under /.auth.

A leaf module: the middleware, the sign-in path, the refresher and the store record into one
Metrics object that app.py builds; each gateway has its own registry, so tests can run several in
one process.

A request's latency is split in two: the gateway's own time (from arrival until the request is sent
upstream, or until the gateway answers by itself) and the upstream's time (from sending until the
upstream's response head arrives). Streaming the body afterwards belongs to neither; the total
duration histogram includes it.
"""

from __future__ import annotations

import time
from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# The gateway's own work is meant to take tens of microseconds: finer buckets at the low end.
OVERHEAD_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
)  # fmt: skip
STORE_OPERATIONS: Final = ("get", "set", "replace", "take", "delete", "ping", "lock")


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


class Metrics:
    def __init__(self) -> None:
        # Labelled children by (route, status): labels() costs more than the update itself.
        self._children: dict[tuple[str, int], tuple[Counter, Histogram, Histogram]] = {}
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
            "Token refreshes that reached MSAL, by outcome (success or an error code).",
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
        self.upstream_errors = Counter(
            "msal_gateway_upstream_errors",
            "Requests the upstream could not answer, by kind.",
            ["kind"],
            registry=self.registry,
        )

    def observe(self, route: str, status: int, timing: Timing) -> None:
        """One answered request: its count, total time and the gateway/upstream split."""
        now = time.perf_counter()
        counted = self._children.get((route, status))
        if counted is None:
            counted = self._children[(route, status)] = (
                self.requests.labels(route, str(status)),
                self.duration.labels(route),
                self.gateway_duration.labels(route),
            )
        requests, duration, gateway_duration = counted
        requests.inc()
        duration.observe(now - timing.started)
        own_until = timing.sent if timing.sent is not None else now
        gateway_duration.observe(own_until - timing.started)
        if timing.sent is not None and timing.answered is not None:
            self.upstream_duration.observe(timing.answered - timing.sent)

    async def serve(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self.serve)
        return app
