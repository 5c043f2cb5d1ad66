"""THREATS A5, issue 14 item 3: rules match what frameworks route, not only what the rule spells.

Protective rules match broadly (a rule on /admin/ governs /admin; /settings governs
/settings.json), public rules narrowly; HEAD is judged as GET, a `_method` query parameter as the
method it names, and a POST as the PUT, PATCH or DELETE a form may turn it into; characters that
some stacks fold into "/", "\\" or "." (look-alikes, overlong UTF-8) are refused like %2F. Tables
against the real gateway over raw sockets, and a property against a model of framework routing.
"""

from __future__ import annotations

import re
from typing import Final

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.fixtures import Launch, Running, signed_in
from support.raw_http import raw_request

from gateway.auth.policy import AmbiguousPath, Policy
from gateway.config.access import PolicyRule

pytestmark = pytest.mark.threat("PA-17", "PA-13", "PA-03", "PA-05")

RULES: Final = [
    {"path": "/public/", "allow": "public"},
    {"path": "/status/", "methods": "GET", "allow": "public"},
    {"path": "/hooks/", "methods": "POST", "allow": "public"},
    {"path": "/admin/", "allow": "deny"},
    {"path": "/settings", "roles": "Writer"},
    {"path": "/reports/", "methods": "GET", "allow": "deny"},
    {"path": "/orders/", "methods": "DELETE", "allow": "deny"},
]


@pytest.fixture
async def guarded(launch: Launch) -> Running:
    return await launch(policy={"rules": RULES})


async def raw(running: Running, method: str, target: str, cookie: str | None = None) -> int:
    status, _ = await raw_request(running.url, target, method=method, cookie=cookie)
    return status


# (user, method, target, status). alice has no Writer role; a 200 reached the echo app.
CASES: Final = [
    # A protective rule governs every spelling a framework routes to the same handler.
    ("alice", "GET", "/admin/", 403),
    ("alice", "GET", "/admin", 403),
    ("alice", "GET", "/admin/users", 403),
    ("alice", "GET", "/admin.json", 403),
    ("alice", "GET", "/admin?x=1", 403),
    ("alice", "GET", "/administrator", 200),  # another resource
    ("alice", "GET", "/settings", 403),
    ("alice", "GET", "/settings.json", 403),
    ("alice", "GET", "/settings.xml?download=1", 403),
    ("alice", "GET", "/settings/", 403),
    ("alice", "GET", "/settingsx", 200),
    # A public rule is as narrow as it is written.
    ("anonymous", "GET", "/public/a", 200),
    ("anonymous", "GET", "/public", 401),
    ("anonymous", "GET", "/public.json", 401),
    ("anonymous", "GET", "/publicity", 401),
    # HEAD is GET.
    ("alice", "HEAD", "/reports/q1", 403),
    ("alice", "GET", "/reports/q1", 403),
    ("alice", "POST", "/reports/q1", 200),
    ("anonymous", "HEAD", "/status/live", 200),
    ("anonymous", "POST", "/status/live", 401),
    # Method overrides: a query `_method`, and a POST a form may turn into DELETE.
    ("alice", "GET", "/orders/7?_method=DELETE", 403),
    ("alice", "GET", "/orders/7?a=1&_method=delete", 403),
    ("alice", "POST", "/orders/7", 403),
    ("alice", "POST", "/orders/", 403),
    ("alice", "GET", "/orders/7", 200),
    ("alice", "PUT", "/orders/7", 200),
    ("alice", "GET", "/orders/7?method=DELETE", 200),
    # The parameter's name as frameworks decode it (review finding): percent-encoded, or with
    # the "." or " " that PHP turns into "_".
    ("alice", "GET", "/orders/7?%5Fmethod=DELETE", 403),
    ("alice", "GET", "/orders/7?%5fmethod=delete", 403),
    ("alice", "GET", "/orders/7?%5F%6D%65%74%68%6F%64=DELETE", 403),
    ("alice", "GET", "/orders/7?.method=DELETE", 403),
    ("alice", "GET", "/orders/7?+method=DELETE", 403),
    ("alice", "POST", "/reports/q1?%5Fmethod=GET", 403),
    ("anonymous", "POST", "/hooks/build?%5Fmethod=DELETE", 401),
    ("anonymous", "POST", "/hooks/build", 200),
    ("anonymous", "POST", "/hooks/build?_method=DELETE", 401),
    ("anonymous", "GET", "/hooks/build", 401),
]


@pytest.mark.parametrize(("user", "method", "target", "status"), CASES)
async def test_rules_govern_what_frameworks_route(
    guarded: Running, user: str, method: str, target: str, status: int
) -> None:
    cookie = None
    if user != "anonymous":
        await signed_in(guarded, user=user)
        cookie = guarded.browser.cookie("__Host-msal-gateway")
    assert await raw(guarded, method, target, cookie) == status


# Escaped characters that some stack turns into "/", "\" or ".": refused while rules exist.
FOLDABLE: Final = {
    "fullwidth-solidus": "/public%EF%BC%8F..%EF%BC%8Fadmin/x",
    "division-slash": "/public/..%E2%88%95admin",
    "fraction-slash": "/public%E2%81%84..%E2%81%84admin",
    "big-solidus": "/public/%E2%A7%B8",
    "fullwidth-reverse-solidus": "/public%EF%BC%BC..%EF%BC%BCadmin",
    "small-reverse-solidus": "/public/%EF%B9%A8",
    "set-minus": "/public/%E2%88%96admin",
    "fullwidth-full-stop": "/public/%EF%BC%8E%EF%BC%8E/admin/x",
    "one-dot-leader": "/public/%E2%80%A4%E2%80%A4/admin/x",
    "ideographic-full-stop": "/public/%E3%80%82%E3%80%82/admin",
    "halfwidth-ideographic-full-stop": "/public/%EF%BD%A1",
    "small-full-stop": "/public/%EF%B9%92%EF%B9%92/admin",
    "fullwidth-percent": "/public/%EF%BC%85%32%46admin",
    "fullwidth-question-mark": "/public%EF%BC%9F/../admin",
    "overlong-slash-2": "/public/%C0%AF..%C0%AFadmin",
    "overlong-dot-2": "/public/%C0%AE%C0%AE/admin",
    "overlong-backslash": "/public/%C1%9C",
    "overlong-slash-3": "/public/%E0%80%AF",
    "overlong-slash-4": "/public/%F0%80%80%AF",
    "lone-continuation": "/public/%80",
    "truncated": "/public/%E2%88",
    "invalid-byte": "/public/%FF",
}
HARMLESS: Final = {
    "accented": "/public/caf%C3%A9",
    "cjk": "/public/%E6%97%A5%E6%9C%AC",
    "emoji": "/public/%F0%9F%99%82",
}


@pytest.mark.parametrize("target", list(FOLDABLE.values()), ids=list(FOLDABLE))
async def test_foldable_characters_are_refused(guarded: Running, target: str) -> None:
    assert await raw(guarded, "GET", target) == 400


@pytest.mark.parametrize("target", list(HARMLESS.values()), ids=list(HARMLESS))
async def test_other_characters_pass_a_public_prefix(guarded: Running, target: str) -> None:
    assert await raw(guarded, "GET", target) == 200


async def test_without_rules_nothing_is_refused_for_its_characters(launch: Launch) -> None:
    plain = await launch()
    await signed_in(plain)
    cookie = plain.browser.cookie("__Host-msal-gateway")
    assert await raw(plain, "GET", FOLDABLE["fullwidth-solidus"], cookie) == 200


# ---- a property against a model of framework routing -------------------------------------------

POLICY: Final = Policy(
    tuple(PolicyRule.model_validate(rule) for rule in RULES), (), case_insensitive=False
)
segments = st.sampled_from(["admin", "settings", "public", "x", "admin.json", "settings.v2", ""])
suffixes = st.sampled_from(["", "/", ".json", ".html", "/y", "/y.json"])


def framework_route(path: str) -> str:
    """The handler a lenient framework picks: trailing "/" ignored, a format suffix on the first
    segment ignored (Express non-strict routing, Spring suffix patterns, Rails formats)."""
    first = path.strip("/").split("/", 1)[0]
    return re.sub(r"\..*$", "", first)


@given(segments, suffixes, st.sampled_from(["GET", "HEAD", "POST", "DELETE", "PUT"]))
def test_a_protected_handler_is_never_reached_unprotected(
    segment: str, suffix: str, method: str
) -> None:
    path = "/" + segment + suffix
    try:
        rule = POLICY.rule_for(method, path)
    except AmbiguousPath:
        return
    handler = framework_route(path)
    if handler == "admin":
        assert rule is not None and rule.path == "/admin/", path
    if handler == "settings":
        assert rule is not None and rule.path == "/settings", path
    if rule is not None and rule.allow == "public":
        assert handler == "public", path


def test_the_model_is_not_vacuous() -> None:
    assert framework_route("/admin.json") == "admin"
    assert framework_route("/settings/") == "settings"
    assert POLICY.rule_for("GET", "/admin") is not None
