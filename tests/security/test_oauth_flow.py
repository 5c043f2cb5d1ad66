"""The OAuth flow and the session's life (THREATS.md A2: OA-01 to OA-15) end to end against
in-process gateways and the development identity provider, driven by the real MSAL: state and
CSRF, nonce, code injection against PKCE, session fixation, logout, fresh state, and the idle and
absolute session lifetimes."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from support.browser import API, AuthResponse, Browser
from support.fixtures import Launch, Running, signed_in, stored_keys
from support.gateway import PUBLIC_URL, idp_ssl


@pytest.mark.threat("OA-11")
async def test_logout_ends_the_session_everywhere(gateway: Running, idp: Any) -> None:
    await signed_in(gateway)
    cookie = gateway.browser.cookie(gateway.settings.session_cookie_name)
    assert cookie is not None
    assert any(key.startswith("gw:tokens:") for key in stored_keys(gateway))
    response = await gateway.browser.get("/.auth/logout?post_logout_redirect_uri=/bye")
    assert response.status == 302
    location = response.headers["Location"]
    assert location.startswith(idp.authority + "/oauth2/v2.0/logout?")
    assert "post_logout_redirect_uri=https%3A%2F%2Fapp.test%2Fbye" in location
    # The session record and the token cache are gone, not just the browser cookie.
    assert not any(k.startswith(("gw:session:", "gw:tokens:")) for k in stored_keys(gateway))
    replay = Browser(gateway.url, "https://app.test", idp_ssl(idp.ca_path))
    try:
        replay.jar.update_cookies(
            {gateway.settings.session_cookie_name: cookie}, response_url=replay.jar_origin()
        )
        assert (await replay.get("/private")).status == 302
        assert (await replay.get("/private", headers=API)).status == 401
    finally:
        await replay.close()


@pytest.mark.threat("OA-01")
async def test_state_mismatch_is_refused_without_redemption(gateway: Running, idp: Any) -> None:
    authorize_url = await gateway.browser.start_sign_in("/")
    auth = await gateway.browser.authorize(authorize_url)
    auth.fields["state"] = "not-the-state-we-issued"
    response = await gateway.browser.deliver(auth)
    assert response.status == 400
    assert idp.token_requests() == []
    assert gateway.browser.cookie(gateway.settings.session_cookie_name) is None


@pytest.mark.threat("OA-01")
async def test_replayed_callback_is_refused(gateway: Running, idp: Any) -> None:
    authorize_url = await gateway.browser.start_sign_in("/")
    auth = await gateway.browser.authorize(authorize_url)
    first = await gateway.browser.deliver(auth)
    assert first.status == 302
    second = await gateway.browser.deliver(auth)
    assert second.status == 400
    assert "expired or was already used" in await second.text()
    assert len(idp.token_requests()) == 1  # the replay never reached the identity provider


@pytest.mark.threat("OA-01")
async def test_callback_in_another_browser_signs_no_one_in(gateway: Running, idp: Any) -> None:
    authorize_url = await gateway.browser.start_sign_in("/")
    auth = await gateway.browser.authorize(authorize_url)
    other = Browser(gateway.url, "https://app.test", idp_ssl(idp.ca_path))
    try:
        response = await other.deliver(auth)
        assert response.status == 400
        assert other.cookie(gateway.settings.session_cookie_name) is None
    finally:
        await other.close()
    assert idp.token_requests() == []


@pytest.mark.threat("OA-05")
async def test_wrong_nonce_is_refused_and_tokens_not_kept(gateway: Running, idp: Any) -> None:
    idp.set_token_faults(nonce="not-the-right-nonce")
    response = await gateway.browser.sign_in("/")
    assert response.status == 400
    assert "nonce" in await response.text()
    assert not any(k.startswith(("gw:tokens:", "gw:session:")) for k in stored_keys(gateway))
    assert gateway.browser.cookie(gateway.settings.session_cookie_name) is None


@pytest.mark.threat("OA-07")
async def test_injected_code_fails_pkce_and_creates_no_session(gateway: Running, idp: Any) -> None:
    """OA-07: an attacker's own code delivered with the victim's state fails the PKCE check."""
    attacker = Browser(gateway.url, "https://app.test", idp_ssl(idp.ca_path))
    try:
        attacker_auth = await attacker.authorize(await attacker.start_sign_in("/"), "bob")
    finally:
        await attacker.close()
    victim_auth = await gateway.browser.authorize(await gateway.browser.start_sign_in("/"))
    victim_auth.fields["code"] = attacker_auth.fields["code"]
    response = await gateway.browser.deliver(victim_auth)
    assert response.status == 502
    assert "invalid_grant" in await response.text()
    assert gateway.browser.cookie(gateway.settings.session_cookie_name) is None
    [token_request] = idp.token_requests()
    assert token_request.form["code"] == attacker_auth.fields["code"]


@pytest.mark.threat("OA-09")
async def test_sign_in_mints_a_new_session_id(gateway: Running, idp: Any) -> None:
    """OA-09: a session id planted before sign-in, or held from an earlier sign-in, is not the
    one the user ends up with, and the earlier one stops working."""
    name = gateway.settings.session_cookie_name
    planted = "A" * 43
    gateway.browser.jar.update_cookies({name: planted}, response_url=gateway.browser.jar_origin())
    await signed_in(gateway)
    first = gateway.browser.cookie(name)
    assert first is not None and first != planted
    again = await gateway.browser.get("/.auth/login/aad")
    auth = await gateway.browser.authorize(again.headers["Location"])
    assert (await gateway.browser.deliver(auth)).status == 302
    second = gateway.browser.cookie(name)
    assert second is not None and second != first
    sessions = [k for k in stored_keys(gateway) if k.startswith("gw:session:")]
    assert len(sessions) == 1  # the earlier session was deleted, not just replaced
    gateway.browser.jar.update_cookies({name: first}, response_url=gateway.browser.jar_origin())
    assert (await gateway.browser.get("/x", headers=API)).status == 401


@pytest.mark.threat("OA-03")
async def test_state_is_fresh_and_unguessable_for_each_sign_in(gateway: Running) -> None:
    """OA-03: every sign-in gets its own high-entropy state; a constant is never accepted."""
    states = set()
    for _ in range(3):
        response = await gateway.browser.get("/.auth/login/aad")
        query = parse_qs(urlsplit(response.headers["Location"]).query)
        [state] = query["state"]
        assert len(state) >= 22  # at least 128 bits, url-safe base64
        states.add(state)
    assert len(states) == 3
    auth = AuthResponse(
        "post", PUBLIC_URL + "/.auth/login/aad/callback", {"state": "state", "code": "x"}
    )
    assert (await gateway.browser.deliver(auth)).status == 400


@pytest.mark.threat("OA-15")
@pytest.mark.parametrize("idle,absolute,sleeps", [(1, 100, [1.3]), (1, 2, [0.6, 0.6, 0.6, 0.6])])
async def test_session_idle_and_absolute_lifetimes(
    launch: Launch, idle: int, absolute: int, sleeps: list[float]
) -> None:
    running = await launch(session={"idle_ttl_seconds": idle, "absolute_ttl_seconds": absolute})
    await signed_in(running)
    assert (await running.browser.get("/x", headers=API)).status == 200
    statuses = []
    for pause in sleeps:
        await asyncio.sleep(pause)
        statuses.append((await running.browser.get("/x", headers=API)).status)
    assert statuses[-1] == 401
    if len(sleeps) > 1:
        assert statuses[0] == 200  # activity kept it alive until the absolute limit
