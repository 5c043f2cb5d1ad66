"""Path matching for rules and public paths (THREATS.md A5): prefix and exact rules, and raw
request targets that an upstream could normalise into another path are refused (400) rather than
matched, once any rule or public path is configured.
"""

from __future__ import annotations

from typing import Final

import pytest

from gateway.auth.paths import matches
from gateway.auth.policy import AmbiguousPath, Policy

PUBLIC: Final = ("/static/", "/health", "/public")


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


@pytest.mark.parametrize("raw_path", AMBIGUOUS)
def test_ambiguous_raw_path_is_refused(raw_path: str) -> None:
    with pytest.raises(AmbiguousPath):
        is_public(raw_path, PUBLIC)


@pytest.mark.parametrize("raw_path", ["/static/..%2fadmin", "/static/%2e%2e/admin", "/health/.."])
def test_ambiguous_path_is_refused_even_under_a_root_prefix(raw_path: str) -> None:
    with pytest.raises(AmbiguousPath):
        is_public(raw_path, ("/",))
