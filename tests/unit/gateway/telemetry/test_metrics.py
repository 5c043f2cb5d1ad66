"""Request metrics in gateway.telemetry.metrics: counted in batches on the hot path, they equal
what Prometheus's own client would have counted, bucket by bucket."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from gateway.telemetry.metrics import LATENCY_BUCKETS, OVERHEAD_BUCKETS, Metrics, Timing

# Durations on both sides of bucket bounds, on them exactly, and beyond the last.
DURATIONS = [0.00005, 0.0001, 0.00010001, 0.0007, 0.001, 0.003, 0.02, 0.3, 1.0, 7.5, 42.0]


async def test_batched_request_metrics_equal_prometheus_own() -> None:
    metrics = Metrics()
    reference = CollectorRegistry()
    expected = {
        name: Histogram(name, "reference", buckets=buckets, registry=reference)
        for name, buckets in (
            ("msal_gateway_request_duration_seconds", LATENCY_BUCKETS),
            ("msal_gateway_gateway_duration_seconds", OVERHEAD_BUCKETS),
            ("msal_gateway_upstream_duration_seconds", LATENCY_BUCKETS),
        )
    }
    for duration in DURATIONS:
        # `duration` of the gateway's own time, then `duration` of the upstream's (on a clock
        # whose zero is the moment it was sent, so that both differences are exact).
        timing = Timing()
        timing.started, timing.sent, timing.answered = -duration, 0.0, duration
        metrics.observe("proxy", 200, timing)
        expected["msal_gateway_gateway_duration_seconds"].observe(duration)
        expected["msal_gateway_upstream_duration_seconds"].observe(duration)
    before_flush = metrics.registry.get_sample_value(
        "msal_gateway_requests_total", {"route": "proxy", "status": "200"}
    )
    assert before_flush == 0  # pending until the flush
    metrics.flush()
    assert metrics.registry.get_sample_value(
        "msal_gateway_requests_total", {"route": "proxy", "status": "200"}
    ) == len(DURATIONS)
    compared = 0
    for name in ("msal_gateway_gateway_duration_seconds", "msal_gateway_upstream_duration_seconds"):
        labels = {"route": "proxy"} if "gateway_duration" in name else {}
        for bound in sorted({*OVERHEAD_BUCKETS, *LATENCY_BUCKETS, float("inf")}):
            le = {"le": "+Inf" if bound == float("inf") else repr(float(bound))}
            want = reference.get_sample_value(f"{name}_bucket", le)
            if want is None:
                continue  # not a bound of this histogram
            got = metrics.registry.get_sample_value(f"{name}_bucket", {**labels, **le})
            assert got == want, (name, bound)
            compared += 1
        got_sum = metrics.registry.get_sample_value(f"{name}_sum", labels)
        assert got_sum == pytest.approx(reference.get_sample_value(f"{name}_sum"), rel=1e-3)
    assert compared == len(OVERHEAD_BUCKETS) + len(LATENCY_BUCKETS) + 2  # every bound, and +Inf
    total = metrics.registry.get_sample_value(
        "msal_gateway_request_duration_seconds_count", {"route": "proxy"}
    )
    assert total == len(DURATIONS)
    metrics.flush()  # nothing pending: nothing changes
    assert metrics.registry.get_sample_value(
        "msal_gateway_requests_total", {"route": "proxy", "status": "200"}
    ) == len(DURATIONS)
