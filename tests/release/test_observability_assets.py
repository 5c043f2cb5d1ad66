"""The Grafana dashboard and the Prometheus alert rules ask only for what the gateway exports.

Every PromQL expression in deploy/grafana/msal-gateway.json (panel targets and the metric
selectors of the template variables' label_values queries) and in deploy/prometheus/alerts.yaml
is parsed by promql-parser (Python bindings of GreptimeTeam's PromQL parser, written in Rust), so
a query that does not parse fails here. Grafana's interval variables ($__rate_interval,
$__interval, $__range) are replaced by a duration first, as Grafana does before sending a query.

The metric names each query selects are then looked up among the samples of a real scrape: a
gateway started in-process with its metrics listener, after a sign-in, proxied requests, a token
refresh, an upstream timeout and a WebSocket, so that the labelled series exist. Sample names
carry their suffixes (_total, _bucket, _count, _sum), so a query that forgets one fails too.
Label names in selectors and in by/without/on/ignoring clauses must exist on the series they
apply to, and a label compared with = or != to a literal must have that value in the scrape;
`job` and `instance` are accepted everywhere because Prometheus adds them to every series it
scrapes (the dashboard's variables select on them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from support.browser import API
from support.fixtures import Launch, signed_in
from support.metrics import scrape
from support.paths import DEPLOY
from support.ports import free_port

DASHBOARD: Final = DEPLOY / "grafana" / "msal-gateway.json"
ALERTS: Final = DEPLOY / "prometheus" / "alerts.yaml"
TARGET_LABELS: Final = frozenset({"job", "instance"})
GRAFANA_INTERVALS: Final = re.compile(r"\$__(?:rate_interval|interval|range)\b")
LABEL_VALUES: Final = re.compile(r"label_values\((?P<selector>.+),\s*(?P<label>\w+)\s*\)")
SEVERITIES: Final = frozenset({"warning", "critical"})
SECRET_EXPIRES: Final = "2031-01-31T00:00:00Z"


@dataclass(frozen=True)
class Query:
    where: str
    text: str


@dataclass
class Exported:
    """Sample name -> label name -> the values seen, from one scrape."""

    samples: dict[str, dict[str, set[str]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Exported:
        exported = cls()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = exported.samples.setdefault(sample.name, {})
                for name, value in sample.labels.items():
                    labels.setdefault(name, set()).add(value)
        return exported

    def labels(self, metric: str) -> set[str]:
        return set(self.samples.get(metric, {})) | TARGET_LABELS


def dashboard_queries() -> Iterator[Query]:
    dashboard = json.loads(DASHBOARD.read_text())
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = LABEL_VALUES.fullmatch(variable["query"]["query"])
        assert match, f"variable {variable['name']}: not a label_values(selector, label) query"
        yield Query(f"variable {variable['name']}", match["selector"])
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield Query(f"panel {panel['title']!r} {target['refId']}", target["expr"])


def alert_queries() -> Iterator[Query]:
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield Query(f"alert {rule['alert']}", rule["expr"])


def parse(query: Query) -> promql_parser.Expr:
    text = GRAFANA_INTERVALS.sub("5m", query.text)
    try:
        return promql_parser.parse(text)
    except ValueError as error:
        raise AssertionError(f"{query.where}: {text!r} does not parse: {error}") from None


def nodes(expr: promql_parser.Expr) -> list[promql_parser.Expr]:
    """Every node of the expression, depth first."""
    found: list[promql_parser.Expr] = []

    def visit(node: promql_parser.Expr) -> None:
        found.append(node)

    promql_parser.walk(expr, pre_visit=visit)
    return found


def selected_metrics(expr: promql_parser.Expr) -> list[promql_parser.VectorSelector]:
    return [node for node in nodes(expr) if isinstance(node, promql_parser.VectorSelector)]


def problems(query: Query, exported: Exported) -> list[str]:
    """Everything in `query` the scrape does not back: metrics, label names, literal values."""
    found: list[str] = []
    for node in nodes(parse(query)):
        if isinstance(node, promql_parser.VectorSelector):
            if node.name is None:
                found.append(f"{query.where}: a selector without a metric name")
                continue
            if node.name not in exported.samples:
                found.append(f"{query.where}: {node.name} is not exported")
                continue
            for matcher in node.matchers.matchers:
                if matcher.name not in exported.labels(node.name):
                    found.append(f"{query.where}: {node.name} has no label {matcher.name}")
                    continue
                literal = "$" not in matcher.value and matcher.name not in TARGET_LABELS
                equality = matcher.op in (
                    promql_parser.MatchOp.Equal,
                    promql_parser.MatchOp.NotEqual,
                )
                seen = exported.samples[node.name].get(matcher.name, set())
                if literal and equality and matcher.value not in seen:
                    found.append(
                        f"{query.where}: {node.name} never has {matcher.name}={matcher.value!r} "
                        f"(seen: {sorted(seen)})"
                    )
        grouping: list[str] = []
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            grouping = list(node.modifier.labels)
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            matching = node.modifier.matching
            grouping = [*(matching.labels if matching else []), *(node.modifier.group_labels or [])]
        if grouping:
            available = set(TARGET_LABELS)
            for selector in selected_metrics(node):
                if selector.name is not None:
                    available |= exported.labels(selector.name)
            found.extend(
                f"{query.where}: groups by {label}, which none of its series has"
                for label in grouping
                if label not in available
            )
    return found


async def scrape_after_traffic(launch: Launch) -> Exported:
    """A gateway's metrics once every labelled series the assets use has a sample."""
    port = free_port()
    running = await launch(
        metrics_listen=f"127.0.0.1:{port}",
        scopes="api://upstream/read",
        client_secret_expires=SECRET_EXPIRES,  # so the credential expiry gauge has a series
        proxy={"read_timeout_seconds": 0.3},
    )
    await signed_in(running)
    assert (await running.browser.get("/orders", headers=API)).status == 200
    refreshed = await running.browser.session.post(running.url + "/.auth/refresh", headers=API)
    await refreshed.read()
    assert refreshed.status == 200
    # The echo upstream answers after 1 s; the gateway gives up after 0.3 s: upstream_timeout.
    assert (await running.browser.get("/_slow?seconds=1", headers=API)).status == 504
    async with running.browser.session.ws_connect(
        running.url + "/_ws", protocols=("echo.v1",)
    ) as ws:
        await ws.receive_json(timeout=5)
        return Exported.parse(await scrape(port))


def all_queries() -> list[Query]:
    return [*dashboard_queries(), *alert_queries()]


def test_every_query_parses() -> None:
    queries = all_queries()
    assert len(queries) >= 25
    for query in queries:
        parse(query)


async def test_every_query_asks_for_series_the_gateway_exports(launch: Launch) -> None:
    exported = await scrape_after_traffic(launch)
    found = [problem for query in all_queries() for problem in problems(query, exported)]
    assert found == []


async def test_the_dashboard_shows_every_metric_the_gateway_exports(launch: Launch) -> None:
    exported = await scrape_after_traffic(launch)
    families = {
        re.sub(r"_(total|bucket|count|sum|created)$", "", name)
        for name in exported.samples
        if name.startswith("msal_gateway_")
    }
    shown = {
        re.sub(r"_(total|bucket|count|sum)$", "", selector.name)
        for query in dashboard_queries()
        for selector in selected_metrics(parse(query))
        if selector.name is not None
    }
    assert families - shown == set()


def test_the_checks_catch_what_they_are_meant_to() -> None:
    """The checker itself: a misspelt metric, a missing suffix, an unknown label or value."""
    exported = Exported.parse(
        '# TYPE msal_gateway_signins counter\nmsal_gateway_signins_total{outcome="success"} 1\n'
    )
    good = Query(
        "good", 'sum by (outcome, job) (rate(msal_gateway_signins_total{outcome="success"}[5m]))'
    )
    assert problems(good, exported) == []
    for bad in (
        "rate(msal_gateway_sign_ins_total[5m])",
        "rate(msal_gateway_signins[5m])",
        'rate(msal_gateway_signins_total{result="success"}[5m])',
        'rate(msal_gateway_signins_total{outcome="sucess"}[5m])',
        "sum by (route) (rate(msal_gateway_signins_total[5m]))",
    ):
        assert problems(Query("bad", bad), exported), bad
    with pytest.raises(AssertionError, match="does not parse"):
        parse(Query("broken", "sum(rate(msal_gateway_signins_total[5m])"))


def test_alert_rules_are_complete() -> None:
    rules: dict[str, Any] = yaml.safe_load(ALERTS.read_text())
    names = []
    for group in rules["groups"]:
        assert set(group) == {"name", "rules"}
        for rule in group["rules"]:
            names.append(rule["alert"])
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
            assert re.fullmatch(r"MsalGateway[A-Z][A-Za-z]+", rule["alert"])
            assert rule["labels"]["severity"] in SEVERITIES
            assert {"summary", "description"} <= set(rule["annotations"])
            if "for" in rule:
                assert re.fullmatch(r"\d+[smh]", rule["for"])
            # Annotations may only use labels the expression keeps.
            expr = parse(Query(rule["alert"], rule["expr"]))
            kept = {
                label
                for node in nodes(expr)
                if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None
                for label in node.modifier.labels
            }
            text = " ".join(rule["annotations"].values())
            for label in re.findall(r"\$labels\.(\w+)", text):
                assert label in kept, f"{rule['alert']}: $labels.{label} is not kept"
    # The failure modes issue 7 names: store, sign-in, refresh, upstream, and the canary.
    for expected in ("Store", "SignIn", "Refresh", "Upstream", "ForwardedWithoutIdentity"):
        assert any(expected in name for name in names), expected


def test_dashboard_layout() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        position = panel["gridPos"]
        assert position["x"] >= 0 and position["x"] + position["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel.get("description"), panel["title"]
