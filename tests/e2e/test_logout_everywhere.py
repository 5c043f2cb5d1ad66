"""Logout everywhere: Entra's front-channel logout (`sid`) and an admin revocation end every
matching session on every replica; sign-out and refresh refuse cross-site triggers; Easy Auth's
token headers on request."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from support.browser import API, Browser
from support.fixtures import Launch, Running, signed_in
from support.gateway import idp_ssl, shared_redis
from support.idp import ALICE_OID
from support.upstream import upstream_headers

ADMIN_TOKEN = secrets.token_urlsafe(32)


async def two_replicas(launch: Launch, redis_url: str, **extra: Any) -> tuple[Running, Running]:
    shared = {
        **shared_redis(redis_url),
        **extra,
    }
    return await launch(**shared), await launch(**shared)


async def test_front_channel_logout_ends_the_sessions_of_a_sid_everywhere(
    launch: Launch, idp: Any, redis_url: str
) -> None:
    first, second = await two_replicas(launch, redis_url)
    idp.set_token_faults(id_token_claims={"sid": "sso-session-1"})
    await signed_in(first)
    await signed_in(second, user="alice")
    idp.set_token_faults()
    other = Browser(second.url, "https://app.test", idp_ssl(idp.ca_path))
    try:
        assert (await other.sign_in("/", "bob")).status == 302  # another sid: unaffected
        response = await other.get("/.auth/logout/frontchannel?sid=sso-session-1")
        assert response.status == 200
        assert (await first.browser.get("/x", headers=API)).status == 401
        assert (await second.browser.get("/x", headers=API)).status == 401
        assert (await other.get("/x", headers=API)).status == 200
    finally:
        await other.close()


async def test_admin_revokes_every_session_of_a_user(
    launch: Launch, idp: Any, redis_url: str
) -> None:
    first, second = await two_replicas(launch, redis_url, admin={"token": ADMIN_TOKEN})
    await signed_in(first, user="alice")
    await signed_in(second, user="alice")
    url = first.url + "/.auth/admin/revoke"
    wrong = await first.browser.session.post(
        url, json={"user": ALICE_OID}, headers={"Authorization": "Bearer wrong"}
    )
    await wrong.read()
    assert wrong.status == 401
    assert (await first.browser.get("/x", headers=API)).status == 200
    done = await first.browser.session.post(
        url, json={"user": ALICE_OID}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert (await done.json()) == {"revoked": 2}
    assert (await first.browser.get("/x", headers=API)).status == 401
    assert (await second.browser.get("/x", headers=API)).status == 401


async def test_admin_endpoint_does_not_exist_without_a_token(gateway: Running) -> None:
    response = await gateway.browser.session.post(
        gateway.url + "/.auth/admin/revoke", json={"user": ALICE_OID}
    )
    await response.read()
    assert response.status == 404


async def test_cross_site_sign_out_and_refresh_are_refused(gateway: Running) -> None:
    await signed_in(gateway)
    cross = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Accept": "text/html"}
    assert (await gateway.browser.get("/.auth/logout", headers=cross)).status == 403
    assert (await gateway.browser.get("/.auth/refresh", headers=cross)).status == 403
    assert (await gateway.browser.get("/x", headers=API)).status == 200  # still signed in
    same = {**cross, "Sec-Fetch-Site": "same-origin"}
    assert (await gateway.browser.get("/.auth/logout", headers=same)).status == 302


async def test_easy_auth_token_headers_when_enabled(launch: Launch) -> None:
    running = await launch(scopes="api://upstream/read", tokens={"easy_auth_token_headers": True})
    await signed_in(running)
    seen = upstream_headers(await (await running.browser.get("/x", headers=API)).json())
    assert seen["x-ms-token-aad-id-token"][0].count(".") == 2
    assert seen["x-ms-token-aad-access-token"][0].count(".") == 2
    assert seen["x-ms-token-aad-expires-on"][0].endswith("Z")
    plain = await launch(scopes="api://upstream/read")
    await signed_in(plain)
    spoofed = await plain.browser.get(
        "/x", headers={**API, "X-MS-TOKEN-AAD-ACCESS-TOKEN": "forged"}
    )
    assert "x-ms-token-aad-access-token" not in upstream_headers(await spoofed.json())


async def revoke(running: Running, user: str) -> tuple[int, dict[str, Any]]:
    response = await running.browser.session.post(
        running.url + "/.auth/admin/revoke",
        json={"user": user},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Accept": "application/json"},
    )
    return response.status, await response.json()


@pytest.mark.parametrize(
    "form",
    ["oid", "OID-upper-case", "oid.tid", "upn-as-me-shows", "upn-other-case"],
)
async def test_revocation_takes_the_ids_an_operator_pastes(launch: Launch, form: str) -> None:
    """Issue 14 item 11: the object id, <oid>.<tid>, or the user_id /.auth/me shows (the UPN)."""
    running = await launch(admin={"token": ADMIN_TOKEN})
    await signed_in(running, user="alice")
    me = (await (await running.browser.get("/.auth/me", headers=API)).json())[0]
    claims = {c["typ"]: c["val"] for c in me["user_claims"]}
    value = {
        "oid": ALICE_OID,
        "OID-upper-case": ALICE_OID.upper(),
        "oid.tid": f"{ALICE_OID}.{claims['tid']}",
        "upn-as-me-shows": me["user_id"],
        "upn-other-case": me["user_id"].upper(),
    }[form]
    assert (await revoke(running, value)) == (200, {"revoked": 1})
    assert (await running.browser.get("/x", headers=API)).status == 401


@pytest.mark.parametrize(
    "value",
    ["Alice", "not-a-guid", f"{ALICE_OID}.contoso", f"{ALICE_OID}.{ALICE_OID}.{ALICE_OID}", " "],
)
async def test_revocation_refuses_a_value_of_no_known_form(launch: Launch, value: str) -> None:
    running = await launch(admin={"token": ADMIN_TOKEN})
    await signed_in(running, user="alice")
    status, body = await revoke(running, value)
    assert status == 400
    assert "object id" in body["message"] and "UPN" in body["message"]
    assert (await running.browser.get("/x", headers=API)).status == 200


async def test_revoking_an_unknown_user_of_a_known_form_is_zero(launch: Launch) -> None:
    running = await launch(admin={"token": ADMIN_TOKEN})
    await signed_in(running, user="alice")
    unknown = "11111111-2222-3333-4444-555555555555"
    assert (await revoke(running, unknown)) == (200, {"revoked": 0})
    assert (await running.browser.get("/x", headers=API)).status == 200
