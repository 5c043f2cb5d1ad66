"""Route policy end to end: rules on groups, roles, tenants, users, emails and domains; denials
as 403 with an audit line; public rules. The reference policy is the kit's ROUTE_RULES; what an
attacker's path can do against it (THREATS.md A5) is in tests/security/test_path_matching.py."""

from __future__ import annotations

import pytest
from support.browser import API
from support.fixtures import Running, signed_in
from support.upstream import upstream_headers
from yarl import URL


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
