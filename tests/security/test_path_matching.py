"""Path-based bypass of rules and public paths (THREATS.md A5: PA-01 to PA-19): prefix and exact
matching, and raw request targets that an upstream could normalise into another path are refused
(400) rather than matched, once any rule or public path is configured; first in gateway.auth's
policy, then through running gateways: a differential harness comparing the path the policy
judged with the path the upstream received, request-target forms, case, and forward-auth's
source of the original path.
"""

from __future__ import annotations

import json
from typing import Final

import pytest
from support import raw_http
from support.browser import API
from support.fixtures import ROUTE_RULES, Launch, Running, signed_in
from yarl import URL

from gateway.auth.paths import matches
from gateway.auth.policy import AmbiguousPath, Policy

PUBLIC: Final = ("/static/", "/health", "/public")


@pytest.mark.threat("PA-09", "PA-17")
@pytest.mark.parametrize(
    ("path", "prefix", "expected"),
    [
        # A prefix ending in "/" matches below it, not the bare directory name.
        ("/static/", "/static/", True),
        ("/static/app.css", "/static/", True),
        ("/static/js/app.js", "/static/", True),
        ("/static", "/static/", False),
        ("/staticfiles/x", "/static/", False),
        ("/Static/x", "/static/", False),
        # Otherwise the exact path and everything below it.
        ("/health", "/health", True),
        ("/health/", "/health", True),
        ("/health/live", "/health", True),
        ("/healthz", "/health", False),
        ("/health-admin", "/health", False),
        ("/healthX/../x", "/health", False),
        ("/admin/health", "/health", False),
        ("/HEALTH", "/health", False),
        ("/public", "/public", True),
        ("/publicity-admin", "/public", False),
        ("", "/health", False),
        ("/", "/health", False),
    ],
)
def test_prefix_and_exact_matching(path: str, prefix: str, expected: bool) -> None:
    assert matches(path, prefix) is expected


@pytest.mark.threat("PA-09", "PA-11")
@pytest.mark.parametrize(
    ("raw_path", "expected"),
    [
        ("/static/app.css", True),
        ("/static/", True),
        ("/static/a.css?v=1", True),
        ("/health", True),
        ("/health/live", True),
        ("/public", True),
        ("/public/page.html", True),
        ("/static", False),
        ("/healthz", False),
        ("/publicity-admin", False),
        ("/admin", False),
        ("/", False),
        ("/STATIC/app.css", False),
    ],
)
def test_is_public_for_plain_paths(raw_path: str, expected: bool) -> None:
    assert is_public(raw_path, PUBLIC) is expected


@pytest.mark.threat("PA-09")
def test_nothing_is_public_without_configured_prefixes() -> None:
    assert is_public("/static/app.css", ()) is False


def is_public(raw_target: str, prefixes: tuple[str, ...]) -> bool:
    rule = Policy((), prefixes, case_insensitive=False).rule_for("GET", raw_target)
    return rule is not None and rule.allow == "public"


AMBIGUOUS: Final = [
    # PA-01 dot segments
    "/static/../admin",
    "/static/./../admin",
    "/static/./admin",
    "/static/..",
    "/health/../admin",
    "/health/..",
    "/public/../admin",
    "/public/x/../../admin",
    # PA-03 encoded slash and encoded dots
    "/static/..%2fadmin",
    "/static/..%2Fadmin",
    "/static%2F..%2Fadmin",
    "/static/article/..%2F..%2Fadmin",
    "/static/%2e%2e/admin",
    "/static/%2E%2E/admin",
    "/static/.%2e/",
    "/static/%2e./admin",
    "/static/%2e/admin",
    "/health/%2e%2e/admin",
    "/public%2f..%2fadmin",
    # PA-05 backslash, raw and encoded
    "/static\\..\\admin",
    "/static/..\\admin",
    "/static/%5c..%5cadmin",
    "/static/%5C..%5Cadmin",
    "/public\\..\\admin",
    # NUL
    "/static/%00",
    "/static/app.css%00.js",
    "/static/%00/../admin",
    "/health%00",
    # Path parameters that Java servlet containers treat as dot segments (Tomcat, Jetty)
    "/static/..;/admin",
    "/static/..;jsessionid=x/admin",
    "/health/..;/admin",
    "/public/.;/..;/admin",
]


@pytest.mark.threat("PA-01", "PA-03", "PA-05", "PA-07")
@pytest.mark.parametrize("raw_path", AMBIGUOUS)
def test_ambiguous_raw_path_is_refused(raw_path: str) -> None:
    with pytest.raises(AmbiguousPath):
        is_public(raw_path, PUBLIC)


@pytest.mark.threat("PA-01", "PA-03")
@pytest.mark.parametrize("raw_path", ["/static/..%2fadmin", "/static/%2e%2e/admin", "/health/.."])
def test_ambiguous_path_is_refused_even_under_a_root_prefix(raw_path: str) -> None:
    with pytest.raises(AmbiguousPath):
        is_public(raw_path, ("/",))


# ---- through a running gateway with the reference route policy ----


@pytest.mark.threat("PA-01", "PA-03")
async def test_ambiguous_paths_are_refused_when_paths_have_rules(launch: Launch) -> None:
    running = await launch(proxy={"public_paths": "/public/"})
    for raw in ("/public/..%2fadmin", "/public/%2e%2e/admin", "/public/./x"):
        response = await running.browser.session.get(
            URL(running.url + raw, encoded=True), headers=API, allow_redirects=False
        )
        await response.read()
        assert response.status == 400, raw


PA_PAYLOADS = [
    "/public/../readers/x",
    "/public/./../readers/x",
    "/healthz/../readers/x",
    "/public%2F..%2Freaders/x",
    "/public/..%2Freaders/x",
    "/public/article/..%2F..%2Freaders/x",
    "/public\\..\\readers\\x",
    "/public%5c..%5creaders/x",
    "/public/%23/../readers/x",
    "/public/x#/../../readers/x",
    "/public/..;/readers/x",
    "/PUBLIC/../readers/x",
    "/Public/x",
    "/public/%2e%2e/readers/x",
    "/public/%00/../readers/x",
]


async def raw_request(running: Running, target: str, extra: str = "") -> tuple[int, bytes]:
    return await raw_http.raw_request(running.url, target, extra)


@pytest.mark.threat("PA-15")
@pytest.mark.parametrize("target", PA_PAYLOADS)
async def test_differential_path_harness(guarded: Running, target: str) -> None:
    """PA-15: anonymous, every payload is refused (400), needs a session (401), or reaches the
    upstream as exactly a path a public rule covers."""
    status, body = await raw_request(guarded, target)
    assert status in (200, 400, 401), (target, status)
    if status == 200:
        received = json.loads(body)["raw_path"]
        assert received.startswith(("/public/", "/healthz")), (target, received)
        assert ".." not in received and "%" not in received


@pytest.mark.threat("PA-13")
async def test_absolute_form_and_asterisk_targets_are_refused(guarded: Running) -> None:
    assert (await raw_request(guarded, "http://gateway.local/public/../readers/x"))[0] == 400
    assert (await raw_request(guarded, "*"))[0] in (400, 404)


@pytest.mark.threat("PA-11")
async def test_case_insensitive_matching_protects_other_spellings(launch: Launch) -> None:
    running = await launch(
        policy={"rules": [{"path": "/admin/", "roles": "Writer"}], "case_insensitive": True}
    )
    await signed_in(running, user="alice")
    response = await running.browser.session.get(
        URL(running.url + "/ADMIN/x", encoded=True), headers=API
    )
    await response.read()
    assert response.status == 403


@pytest.mark.threat("PA-19")
async def test_forward_auth_judges_the_original_request_only_from_trusted_proxies(
    launch: Launch,
) -> None:
    trusting = await launch(
        policy={"rules": ROUTE_RULES}, proxy={"trusted_proxies": "127.0.0.1/32"}
    )
    await signed_in(trusting, user="bob")
    asked = {"X-Original-URI": "/readers/report", "X-Original-Method": "GET", **API}
    assert (await trusting.browser.get("/.auth/verify", headers=asked)).status == 403
    public = {"X-Forwarded-Uri": "/public/a", **API}
    assert (await trusting.browser.get("/.auth/verify", headers=public)).status == 200

    untrusting = await launch(policy={"rules": ROUTE_RULES})
    await signed_in(untrusting, user="bob")
    # From an untrusted peer the original request cannot be known: refuse, never guess "/".
    assert (await untrusting.browser.get("/.auth/verify", headers=asked)).status == 403
    assert (await untrusting.browser.get("/.auth/verify", headers=API)).status == 200
    both = {"X-Original-URI": "/public/a", "X-Forwarded-Uri": "/readers/x", **API}
    assert (await trusting.browser.get("/.auth/verify", headers=both)).status == 403


@pytest.mark.threat("PA-19")
@pytest.mark.parametrize(
    ("url", "also", "status"),
    [
        ("https://app.test/readers/report", {}, 403),  # ingress-nginx without auth-method
        ("https://app.test/contoso/x?y=1", {}, 200),
        ("http://app.test:8443/readers/x", {}, 403),
        # The target starts at the first "/": nginx forwards /public/ for this one.
        ("https://app.test?x=/public/", {}, 200),
        ("https://app.test:?x/readers/x", {}, 403),
        ("https://app.test", {}, 403),
        ("ftp://app.test/contoso/x", {}, 403),
        ("app.test/contoso/x", {}, 403),
        ("/readers/x", {}, 403),  # a target rather than a URL: judged as it is
        ("/contoso/x", {}, 200),
        # With auth-method ingress-nginx sends both, which must agree.
        ("https://app.test/readers/x", {"X-Original-URI": "/readers/x"}, 403),
        ("https://app.test/public/a", {"X-Original-URI": "/readers/x"}, 403),
        ("https://app.test/readers/x", {"X-Original-URI": "/public/a"}, 403),
    ],
)
async def test_forward_auth_reads_ingress_nginx_original_url(
    launch: Launch, url: str, also: dict[str, str], status: int
) -> None:
    trusting = await launch(
        policy={"rules": ROUTE_RULES}, proxy={"trusted_proxies": "127.0.0.1/32"}
    )
    await signed_in(trusting, user="bob")
    asked = {"X-Original-URL": url, **also, **API}
    assert (await trusting.browser.get("/.auth/verify", headers=asked)).status == status
    untrusting = await launch(policy={"rules": ROUTE_RULES})
    await signed_in(untrusting, user="bob")
    assert (await untrusting.browser.get("/.auth/verify", headers=asked)).status == 403


@pytest.mark.threat("PA-19")
@pytest.mark.parametrize(
    "host",
    [
        # nginx takes everything after the first ":" of Host for the port without checking it,
        # routes the request to the server block of app.test, and ingress-nginx builds
        # X-Original-URL from the raw $http_host: https://app.test:?x/readers/report. The "?"
        # must not turn the real path into a query of "/" (found in review).
        "app.test:?x",
        "app.test:?",
        "app.test:443?",
    ],
)
async def test_forward_auth_ingress_host_cannot_hide_the_path(launch: Launch, host: str) -> None:
    trusting = await launch(
        policy={"rules": ROUTE_RULES}, proxy={"trusted_proxies": "127.0.0.1/32"}
    )
    await signed_in(trusting, user="bob")  # signed in, but not in the readers' group
    for target, refused in (("/readers/report", 403), ("/closed/x", 403)):
        asked = {"X-Original-URL": f"https://{host}{target}", **API}
        answer = await trusting.browser.get("/.auth/verify", headers=asked)
        assert answer.status == refused, (host, target, answer.status)


@pytest.mark.threat("PA-19")
async def test_envoy_style_verify_path_carries_the_original_request(launch: Launch) -> None:
    trusting = await launch(
        policy={"rules": ROUTE_RULES}, proxy={"trusted_proxies": "127.0.0.1/32"}
    )
    await signed_in(trusting, user="bob")
    assert (await trusting.browser.get("/.auth/verify/readers/x", headers=API)).status == 403
    assert (await trusting.browser.get("/.auth/verify/contoso/x", headers=API)).status == 200
    posted = await trusting.browser.session.post(
        trusting.url + "/.auth/verify/orders/1", headers=API
    )
    await posted.read()
    assert posted.status == 403  # the rule for POST /orders/ needs the Writer role
