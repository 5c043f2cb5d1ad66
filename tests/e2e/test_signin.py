"""End to end: the sign-in path against the development identity provider, driven by the real MSAL.

A scripted browser walks the real redirects: gateway → identity provider → callback → the page it
asked for. Every test checks what the upstream received or what the store holds, not only codes.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jwt
from support.browser import API, NAVIGATE, AuthResponse, Browser
from support.fixtures import Launch, Running, signed_in, stored_keys
from support.gateway import PUBLIC_URL, idp_ssl
from support.upstream import upstream_headers


async def test_sign_in_returns_to_the_page_asked_for(gateway: Running) -> None:
    response = await gateway.browser.sign_in("/reports/2026?view=full", "alice")
    assert response.status == 302
    assert response.headers["Location"] == "/reports/2026?view=full"
    page = await gateway.browser.get("/reports/2026?view=full")
    assert page.status == 200
    body = await page.json()
    assert body["path"] == "/reports/2026"
    assert body["query"] == "view=full"


async def test_upstream_receives_identity_headers(gateway: Running, idp: Any) -> None:
    await signed_in(gateway)
    body = await (await gateway.browser.get("/whoami")).json()
    seen = upstream_headers(body)
    assert seen["x-ms-client-principal-name"] == ["alice@contoso.example"]
    assert seen["x-forwarded-preferred-username"] == ["alice@contoso.example"]
    assert seen["x-ms-client-principal-idp"] == ["aad"]
    oid = seen["x-ms-client-principal-id"][0]
    assert seen["x-forwarded-user"] == [oid]
    assert seen["x-forwarded-email"] == ["alice@contoso.example"]
    principal = json.loads(base64.b64decode(seen["x-ms-client-principal"][0]))
    assert principal["auth_typ"] == "aad"
    claims = {(c["typ"], c["val"]) for c in principal["claims"]}
    assert ("oid", oid) in claims
    assert ("tid", idp.tenant_id) in claims
    # No bearer token without GATEWAY_SCOPES, and the gateway's cookies never reach the app.
    assert "authorization" not in seen
    assert "cookie" not in seen


async def test_bearer_token_for_configured_scopes(launch: Launch, idp: Any) -> None:
    running = await launch(scopes="api://upstream/read")
    await signed_in(running)
    body = await (await running.browser.get("/api/orders")).json()
    authorization = upstream_headers(body)["authorization"]
    assert len(authorization) == 1 and authorization[0].startswith("Bearer ")
    token = authorization[0].removeprefix("Bearer ")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == "api://upstream"
    assert "read" in claims["scp"].split()
    assert claims["tid"] == idp.tenant_id


async def test_me_returns_the_principal_and_401_when_signed_out(gateway: Running) -> None:
    response = await gateway.browser.get("/.auth/me", headers=API)
    assert response.status == 401
    assert (await response.json())["error"] == "sign_in_required"
    await signed_in(gateway)
    response = await gateway.browser.get("/.auth/me", headers=API)
    assert response.status == 200
    [entry] = await response.json()
    assert entry["provider_name"] == "aad"
    assert entry["user_id"] == "alice@contoso.example"
    assert {"typ": "name", "val": "Alice Example"} in entry["user_claims"]
    assert "access_token" not in entry and "id_token" not in entry


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


async def test_state_mismatch_is_refused_without_redemption(gateway: Running, idp: Any) -> None:
    authorize_url = await gateway.browser.start_sign_in("/")
    auth = await gateway.browser.authorize(authorize_url)
    auth.fields["state"] = "not-the-state-we-issued"
    response = await gateway.browser.deliver(auth)
    assert response.status == 400
    assert idp.token_requests() == []
    assert gateway.browser.cookie(gateway.settings.session_cookie_name) is None


async def test_replayed_callback_is_refused(gateway: Running, idp: Any) -> None:
    authorize_url = await gateway.browser.start_sign_in("/")
    auth = await gateway.browser.authorize(authorize_url)
    first = await gateway.browser.deliver(auth)
    assert first.status == 302
    second = await gateway.browser.deliver(auth)
    assert second.status == 400
    assert "expired or was already used" in await second.text()
    assert len(idp.token_requests()) == 1  # the replay never reached the identity provider


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


async def test_wrong_nonce_is_refused_and_tokens_not_kept(gateway: Running, idp: Any) -> None:
    idp.set_token_faults(nonce="not-the-right-nonce")
    response = await gateway.browser.sign_in("/")
    assert response.status == 400
    assert "nonce" in await response.text()
    assert not any(k.startswith(("gw:tokens:", "gw:session:")) for k in stored_keys(gateway))
    assert gateway.browser.cookie(gateway.settings.session_cookie_name) is None


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


async def test_api_requests_get_401_and_start_no_sign_in(gateway: Running) -> None:
    before = stored_keys(gateway)
    for headers in (
        API,
        {"Accept": "text/html", "Sec-Fetch-Mode": "cors"},
        {"Accept": "text/html", "X-Requested-With": "XMLHttpRequest"},
    ):
        response = await gateway.browser.get("/api/data", headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer ")
        assert (await response.json())["error"] == "sign_in_required"
    assert stored_keys(gateway) == before


async def test_navigation_redirects_to_sign_in_with_path_only(gateway: Running) -> None:
    response = await gateway.browser.get("/a/b?c=d", headers=NAVIGATE)
    assert response.status == 302
    assert response.headers["Location"] == (
        "/.auth/login/aad?post_login_redirect_uri=%2Fa%2Fb%3Fc%3Dd"
    )


async def test_unsafe_return_targets_are_refused_before_sign_in(gateway: Running) -> None:
    for target in ("//evil.com", "https://evil.com/", "/\\evil.com", "javascript:alert(1)"):
        response = await gateway.browser.get(
            "/.auth/login/aad", params={"post_login_redirect_uri": target}
        )
        assert response.status == 400
        assert "Location" not in response.headers
    assert stored_keys(gateway) == []


async def test_unknown_auth_path_is_404_and_never_proxied(gateway: Running) -> None:
    response = await gateway.browser.get("/.auth/anything", headers=API)
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"


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


async def test_absolute_form_request_line_never_names_a_foreign_host(gateway: Running) -> None:
    """RD-17: the sign-in redirect is built from the path, never from the request line's URL."""
    host, port = gateway.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"GET http://evil.com/evil.com HTTP/1.1\r\nHost: app.test\r\n"
        b"Accept: text/html\r\nSec-Fetch-Mode: navigate\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    head = (await reader.read(4096)).decode("latin-1")
    writer.close()
    await writer.wait_closed()
    location = next(line for line in head.split("\r\n") if line.lower().startswith("location:"))
    target = location.split(":", 1)[1].strip()
    assert target.startswith("/.auth/login/aad")
    assert "evil.com" not in target.split("post_login_redirect_uri=")[0]
    assert not unquote(target.split("post_login_redirect_uri=")[-1]).startswith("//")


async def test_me_includes_tokens_only_when_configured(launch: Launch) -> None:
    running = await launch(scopes="api://upstream/read", tokens={"expose_in_me": True})
    await signed_in(running)
    [entry] = await (await running.browser.get("/.auth/me", headers=API)).json()
    assert entry["access_token"].count(".") == 2
    assert entry["id_token"].count(".") == 2
    assert "refresh_token" not in entry


async def test_logout_refuses_a_foreign_return_target(gateway: Running) -> None:
    await signed_in(gateway)
    response = await gateway.browser.get("/.auth/logout?post_logout_redirect_uri=//evil.com")
    assert response.status == 400
    assert "Location" not in response.headers


async def test_sign_ins_started_in_two_tabs_both_finish(gateway: Running) -> None:
    first = await gateway.browser.authorize(await gateway.browser.start_sign_in("/one"))
    second = await gateway.browser.authorize(await gateway.browser.start_sign_in("/two"))
    done_first = await gateway.browser.deliver(first)
    done_second = await gateway.browser.deliver(second)
    assert (done_first.status, done_first.headers["Location"]) == (302, "/one")
    assert (done_second.status, done_second.headers["Location"]) == (302, "/two")
