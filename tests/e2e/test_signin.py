"""End to end: the sign-in path against the development identity provider, driven by the real MSAL.

A scripted browser walks the real redirects: gateway → identity provider → callback → the page it
asked for. Every test checks what the upstream received or what the store holds, not only codes.
Attacks on the flow (THREATS.md A2) are in tests/security/test_oauth_flow.py.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
from support.browser import API, NAVIGATE
from support.fixtures import Launch, Running, signed_in, stored_keys
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


async def test_unknown_auth_path_is_404_and_never_proxied(gateway: Running) -> None:
    response = await gateway.browser.get("/.auth/anything", headers=API)
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"


async def test_me_includes_tokens_only_when_configured(launch: Launch) -> None:
    running = await launch(scopes="api://upstream/read", tokens={"expose_in_me": True})
    await signed_in(running)
    [entry] = await (await running.browser.get("/.auth/me", headers=API)).json()
    assert entry["access_token"].count(".") == 2
    assert entry["id_token"].count(".") == 2
    assert "refresh_token" not in entry


async def test_sign_ins_started_in_two_tabs_both_finish(gateway: Running) -> None:
    first = await gateway.browser.authorize(await gateway.browser.start_sign_in("/one"))
    second = await gateway.browser.authorize(await gateway.browser.start_sign_in("/two"))
    done_first = await gateway.browser.deliver(first)
    done_second = await gateway.browser.deliver(second)
    assert (done_first.status, done_first.headers["Location"]) == (302, "/one")
    assert (done_second.status, done_second.headers["Location"]) == (302, "/two")
