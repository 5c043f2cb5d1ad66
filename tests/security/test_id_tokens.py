"""The gateway's own id_token policy (THREATS.md A3 for sign-in; MSAL checks only the nonce):
signature by a published key, exact issuer, audience, expiry, and the tenant allow-list for
multi-tenant authorities; and an identity provider that is down (F-09). End to end against
in-process gateways and the development identity provider's token faults."""

from __future__ import annotations

from typing import Any

import pytest
from support.fixtures import Launch, stored_keys

FAULTS = [
    pytest.param({"id_token_issuer": "https://login.microsoftonline.com/evil/v2.0"}, id="issuer"),
    pytest.param({"id_token_audience": "someone-else"}, id="audience"),
    pytest.param({"id_token_expired": True}, id="expired"),
    pytest.param({"id_token_unknown_key": True}, id="unknown-key"),
    pytest.param({"omit_id_token": True}, id="missing"),
]


@pytest.mark.threat("JW-05", "JW-07", "JW-09", "JW-13")
@pytest.mark.parametrize("fault", FAULTS)
async def test_bad_id_token_signs_no_one_in(
    launch: Launch, idp: Any, fault: dict[str, Any]
) -> None:
    running = await launch()
    idp.set_token_faults(**fault)
    response = await running.browser.sign_in("/")
    assert response.status == 400, await response.text()
    assert running.browser.cookie(running.settings.session_cookie_name) is None
    assert not any(k.startswith(("gw:session:", "gw:tokens:")) for k in stored_keys(running))


@pytest.mark.threat("JW-09")
async def test_issuer_prefix_of_the_real_one_is_refused(launch: Launch, idp: Any) -> None:
    """JW-09: a prefix or extension of the expected issuer is not the expected issuer."""
    running = await launch()
    for issuer in (idp.authority, idp.authority + "/v2.0/extra", idp.authority + "/v2"):
        idp.set_token_faults(id_token_issuer=issuer)
        response = await running.browser.sign_in("/")
        assert response.status == 400, issuer
        running.browser.jar.clear()


@pytest.mark.threat("JW-11")
async def test_multi_tenant_authority_enforces_the_allow_list(launch: Launch, idp: Any) -> None:
    organizations = idp.authority.rsplit("/", 1)[0] + "/organizations"
    allowed = await launch(authority=organizations, allowed_tenants=idp.tenant_id)
    response = await allowed.browser.sign_in("/")
    assert response.status == 302, await response.text()

    other_tenant = "11111111-2222-3333-4444-555555555555"
    refused = await launch(authority=organizations, allowed_tenants=other_tenant)
    response = await refused.browser.sign_in("/")
    assert response.status == 400
    assert "tenant" in await response.text()
    assert refused.browser.cookie(refused.settings.session_cookie_name) is None


@pytest.mark.threat("F-09")
async def test_identity_provider_down_gives_a_clear_page_and_not_ready(
    launch: Launch, idp: Any
) -> None:
    idp.fail("discovery", 503, times=None)
    try:
        running = await launch(wait_ready=False)
        page = await running.browser.get("/.auth/login/aad")
        assert page.status == 502
        assert "identity provider" in await page.text()
        ready = await running.browser.get("/.auth/readyz", headers={"Accept": "application/json"})
        assert ready.status == 503
        assert (await ready.json())["checks"]["identity_provider"] != "ok"
        live = await running.browser.get("/.auth/healthz", headers={"Accept": "application/json"})
        assert live.status == 200
    finally:
        idp.clear_faults()
