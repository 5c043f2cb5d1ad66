"""CORS preflights (issue 16 item 4): browsers send them without cookies, so by default they get
the 401 of any request without a session; with GATEWAY_PROXY__CORS_PREFLIGHT=pass they reach the
application, which answers them, and never carry an identity (not even a signed-in caller's),
through the proxy and through forward-auth alike."""

from __future__ import annotations

import pytest
from support.browser import API
from support.fixtures import Launch, signed_in
from support.upstream import upstream_headers

PREFLIGHT = {
    **API,
    "Origin": "https://spa.example",
    "Access-Control-Request-Method": "PUT",
    "Access-Control-Request-Headers": "content-type",
    "X-Forwarded-User": "admin",  # a client's own copy, never passed on
}
IDENTITY = ("x-forwarded-user", "x-ms-client-principal", "authorization", "x-forwarded-email")


async def test_preflights_are_refused_by_default(launch: Launch) -> None:
    running = await launch()
    response = await running.browser.session.options(running.url + "/api/x", headers=PREFLIGHT)
    await response.read()
    assert response.status == 401


@pytest.mark.parametrize("signed", [False, True], ids=["anonymous", "with-a-session"])
async def test_passed_preflights_reach_the_app_without_identity(
    launch: Launch, signed: bool
) -> None:
    running = await launch(
        proxy={"cors_preflight": "pass", "trusted_proxies": "127.0.0.1/32"},
        policy={
            "rules": [{"path": "/api/", "roles": "Writer"}, {"path": "/closed/", "allow": "deny"}]
        },
    )
    if signed:
        await signed_in(running)
    response = await running.browser.session.options(running.url + "/api/x", headers=PREFLIGHT)
    body = await response.json()
    assert response.status == 200, body
    assert body["method"] == "OPTIONS"
    seen = upstream_headers(body)
    assert [name for name in IDENTITY if name in seen] == []
    assert seen["access-control-request-method"] == ["PUT"]
    verified = await running.browser.session.get(
        running.url + "/.auth/verify",
        headers={**PREFLIGHT, "X-Original-URI": "/api/x", "X-Original-Method": "OPTIONS"},
    )
    await verified.read()
    assert verified.status == 200
    assert [name for name in IDENTITY if name in verified.headers] == []


async def test_only_real_preflights_pass(launch: Launch) -> None:
    running = await launch(proxy={"cors_preflight": "pass"})
    for missing in ("Origin", "Access-Control-Request-Method"):
        headers = {k: v for k, v in PREFLIGHT.items() if k != missing}
        response = await running.browser.session.options(running.url + "/api/x", headers=headers)
        await response.read()
        assert response.status == 401, missing
    other = await running.browser.session.get(running.url + "/api/x", headers=PREFLIGHT)
    await other.read()
    assert other.status == 401  # a GET that carries preflight headers is no preflight


async def test_a_denied_path_stays_closed_to_preflights(launch: Launch) -> None:
    running = await launch(
        proxy={"cors_preflight": "pass"}, policy={"rules": [{"path": "/closed/", "allow": "deny"}]}
    )
    response = await running.browser.session.options(running.url + "/closed/x", headers=PREFLIGHT)
    await response.read()
    assert response.status == 401
