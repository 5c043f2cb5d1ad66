"""Prometheus metrics, served on their own listener (GATEWAY_METRICS_LISTEN), never under /.auth.

A leaf module: the middleware, the sign-in path and the refresher record into one Metrics object
that app.py builds; each gateway has its own registry, so tests can run several in one process.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
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

    async def serve(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self.serve)
        return app
