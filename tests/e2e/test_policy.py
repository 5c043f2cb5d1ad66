"""Route policy end to end: rules on groups, roles, tenants, users, emails and domains; denials
as 403 with an audit line; ambiguous request targets refused (THREATS.md A5, with a differential
check that the path the policy judged is the path the upstream received); forward-auth judging
the original request only when a trusted proxy names it."""

from __future__ import annotations

import asyncio
import json

import pytest
from support.browser import API
from support.fixtures import Launch, Running, signed_in
from support.idp import ALICE_OID
from support.upstream import upstream_headers
from yarl import URL

from devidp.groups import READERS

RULES = [
    {"path": "/public/", "allow": "public"},
    {"path": "/healthz", "allow": "public"},
    {"path": "/readers/", "groups": READERS.id},
    {"path": "/writers/", "roles": "Writer"},
    {"path": "/alice/", "users": ALICE_OID},
    {"path": "/contoso/", "domains": "contoso.example"},
    {"path": "/bob-only/", "emails": "bob@contoso.example"},
    {"path": "/other-tenant/", "tenants": "11111111-2222-3333-4444-555555555555"},
    {"path": "/closed/", "allow": "deny"},
    {"path": "/orders/", "methods": "POST", "roles": "Writer"},
]


@pytest.fixture
async def guarded(launch: Launch) -> Running:
    return await launch(policy={"rules": RULES})


@pytest.mark.parametrize(
    ("user", "path", "status"),
    [
        ("alice", "/readers/x", 200),
        ("bob", "/readers/x", 403),
        ("jose", "/writers/x", 200),
        ("alice", "/writers/x", 403),
        ("alice", "/alice/x", 200),
        ("bob", "/alice/x", 403),
        ("bob", "/contoso/x", 200),
        ("jose", "/contoso/x", 403),  # no email claim: a domain rule cannot be met
        ("bob", "/bob-only/x", 200),
        ("alice", "/bob-only/x", 403),
        ("alice", "/other-tenant/x", 403),
        ("jose", "/closed/x", 403),
        ("alice", "/orders/x", 200),  # the rule is for POST only
        ("alice", "/anything-else", 200),  # no rule: a signed-in user is enough
    ],
)
async def test_rules_admit_and_refuse(guarded: Running, user: str, path: str, status: int) -> None:
    await signed_in(guarded, user=user)
    response = await guarded.browser.get(path, headers=API)
    assert response.status == status
    if status == 403:
        assert (await response.json())["error"] == "forbidden"


async def test_method_rule_and_denial_page_and_audit(
    guarded: Running, caplog: pytest.LogCaptureFixture
) -> None:
    await signed_in(guarded, user="alice")
    posted = await guarded.browser.session.post(guarded.url + "/orders/1", headers=API)
    await posted.read()
    assert posted.status == 403
    ambiguous = await guarded.browser.session.get(
        URL(guarded.url + "/readers/../writers/x", encoded=True), headers=API
    )
    await ambiguous.read()
    assert ambiguous.status == 400  # refused outright, never guessed at
    page = await guarded.browser.get("/writers/x")
    assert page.status == 403
    assert "Access denied" in await page.text()
    assert "access denied: user=0b7e2c1d" in caplog.text and "rule=/writers/" in caplog.text


async def test_public_rules_need_no_sign_in_and_strip_identity(guarded: Running) -> None:
    response = await guarded.browser.get("/public/a", headers={**API, "X-Forwarded-User": "admin"})
    assert response.status == 200
    assert "x-forwarded-user" not in upstream_headers(await response.json())
    assert (await guarded.browser.get("/healthz", headers=API)).status == 200
    assert (await guarded.browser.get("/healthzX", headers=API)).status == 401
    assert (await guarded.browser.get("/publicity", headers=API)).status == 401


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
    host, port = running.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"GET {target} HTTP/1.1\r\nHost: app.test\r\nAccept: application/json\r\n"
        f"{extra}Connection: close\r\n\r\n".encode("latin-1")
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


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


async def test_absolute_form_and_asterisk_targets_are_refused(guarded: Running) -> None:
    assert (await raw_request(guarded, "http://gateway.local/public/../readers/x"))[0] == 400
    assert (await raw_request(guarded, "*"))[0] in (400, 404)


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


async def test_forward_auth_judges_the_original_request_only_from_trusted_proxies(
    launch: Launch,
) -> None:
    trusting = await launch(policy={"rules": RULES}, proxy={"trusted_proxies": "127.0.0.1/32"})
    await signed_in(trusting, user="bob")
    asked = {"X-Original-URI": "/readers/report", "X-Original-Method": "GET", **API}
    assert (await trusting.browser.get("/.auth/verify", headers=asked)).status == 403
    public = {"X-Forwarded-Uri": "/public/a", **API}
    assert (await trusting.browser.get("/.auth/verify", headers=public)).status == 200

    untrusting = await launch(policy={"rules": RULES})
    await signed_in(untrusting, user="bob")
    # From an untrusted peer the original request cannot be known: refuse, never guess "/".
    assert (await untrusting.browser.get("/.auth/verify", headers=asked)).status == 403
    assert (await untrusting.browser.get("/.auth/verify", headers=API)).status == 200
    both = {"X-Original-URI": "/public/a", "X-Forwarded-Uri": "/readers/x", **API}
    assert (await trusting.browser.get("/.auth/verify", headers=both)).status == 403


async def test_envoy_style_verify_path_carries_the_original_request(launch: Launch) -> None:
    trusting = await launch(policy={"rules": RULES}, proxy={"trusted_proxies": "127.0.0.1/32"})
    await signed_in(trusting, user="bob")
    assert (await trusting.browser.get("/.auth/verify/readers/x", headers=API)).status == 403
    assert (await trusting.browser.get("/.auth/verify/contoso/x", headers=API)).status == 200
    posted = await trusting.browser.session.post(
        trusting.url + "/.auth/verify/orders/1", headers=API
    )
    await posted.read()
    assert posted.status == 403  # the rule for POST /orders/ needs the Writer role
