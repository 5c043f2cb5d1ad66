"""API clients with their own Entra access token (Authorization: Bearer) through the real gateway:
validated against the development identity provider's keys (including a key rotation), refused
with RFC 6750's invalid_token, judged by scope rules, and forwarded with no token, their own
token, or one obtained on their behalf (OBO, cached per caller)."""

from __future__ import annotations

from typing import Any

import jwt
from support.browser import API
from support.fixtures import Launch
from support.upstream import upstream_headers

GATEWAY_API = "api://gateway"


def bearer(token: str) -> dict[str, str]:
    return {**API, "Authorization": f"Bearer {token}"}


async def test_api_caller_is_identified_by_its_token(launch: Launch, idp: Any) -> None:
    running = await launch(api={"audiences": GATEWAY_API})
    token = idp.issue_access_token("alice", scope=f"{GATEWAY_API}/access")
    response = await running.browser.get("/orders", headers=bearer(token))
    assert response.status == 200, await response.text()
    seen = upstream_headers(await response.json())
    assert seen["x-ms-client-principal-name"] == ["alice@contoso.example"]
    assert seen["x-forwarded-user"] == ["0b7e2c1d-4a5f-4e3b-8c9d-1e2f3a4b5c6d"]
    assert "authorization" not in seen  # upstream_token=none: the caller's token stays here


async def test_refused_tokens_get_invalid_token(launch: Launch, idp: Any) -> None:
    running = await launch(api={"audiences": GATEWAY_API})
    cases = {
        "expired": idp.issue_access_token(
            "alice", scope=f"{GATEWAY_API}/access", claims={"exp": 1_000_000_000}
        ),
        "other audience": idp.issue_access_token("alice", scope="api://someone-else/access"),
        "unknown key": idp.issue_access_token(
            "alice", scope=f"{GATEWAY_API}/access", unknown_key=True
        ),
        "id token": idp.issue_id_token("alice"),
        "garbage": "not.a.token",
    }
    for name, token in cases.items():
        response = await running.browser.get("/orders", headers=bearer(token))
        assert response.status == 401, name
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"], name
    two = await running.browser.session.get(
        running.url + "/orders",
        headers=[("Accept", "application/json"), ("Authorization", "Bearer a.b.c")] * 2,
    )
    await two.read()
    assert two.status == 400


async def test_a_rotated_signing_key_is_fetched(launch: Launch, idp: Any) -> None:
    running = await launch(api={"audiences": GATEWAY_API})
    idp.rotate_signing_key(keep_old=False)
    token = idp.issue_access_token("alice", scope=f"{GATEWAY_API}/access")
    response = await running.browser.get("/orders", headers=bearer(token))
    assert response.status == 200


async def test_scope_rules_apply_to_api_callers(launch: Launch, idp: Any) -> None:
    running = await launch(
        api={"audiences": GATEWAY_API},
        policy={"rules": [{"path": "/admin/", "scopes": "admin"}]},
    )
    reader = idp.issue_access_token("alice", scope=f"{GATEWAY_API}/access")
    admin = idp.issue_access_token("alice", scope=f"{GATEWAY_API}/admin")
    assert (await running.browser.get("/admin/x", headers=bearer(reader))).status == 403
    assert (await running.browser.get("/admin/x", headers=bearer(admin))).status == 200


async def test_pass_mode_forwards_the_callers_token(launch: Launch, idp: Any) -> None:
    running = await launch(api={"audiences": GATEWAY_API, "upstream_token": "pass"})
    token = idp.issue_access_token("alice", scope=f"{GATEWAY_API}/access")
    seen = upstream_headers(await (await running.browser.get("/o", headers=bearer(token))).json())
    assert seen["authorization"] == [f"Bearer {token}"]


async def test_on_behalf_of_exchanges_and_caches_per_caller(launch: Launch, idp: Any) -> None:
    own_api = f"api://{idp.client_id}"
    running = await launch(
        scopes="api://upstream/read",
        api={"audiences": own_api, "upstream_token": "on_behalf_of"},
    )
    token = idp.issue_access_token("alice", scope=f"{own_api}/access")
    idp.clear_log()
    first = upstream_headers(await (await running.browser.get("/a", headers=bearer(token))).json())
    second = upstream_headers(await (await running.browser.get("/b", headers=bearer(token))).json())
    exchanged = first["authorization"][0].removeprefix("Bearer ")
    claims = jwt.decode(exchanged, options={"verify_signature": False})
    assert claims["aud"] == "api://upstream"
    assert claims["oid"] == "0b7e2c1d-4a5f-4e3b-8c9d-1e2f3a4b5c6d"  # still the caller
    assert first["authorization"] == second["authorization"]
    obo = [r for r in idp.token_requests() if r.form.get("requested_token_use") == "on_behalf_of"]
    assert len(obo) == 1


async def test_without_api_audiences_bearer_tokens_are_ignored(launch: Launch, idp: Any) -> None:
    running = await launch()
    token = idp.issue_access_token("alice", scope=f"{GATEWAY_API}/access")
    response = await running.browser.get("/orders", headers=bearer(token))
    assert response.status == 401  # no session; the token is not a way in
