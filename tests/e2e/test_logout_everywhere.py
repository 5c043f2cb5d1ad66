"""Logout everywhere: Entra's front-channel logout (`sid`) and an admin revocation end every
matching session on every replica; sign-out and refresh refuse cross-site triggers; Easy Auth's
token headers on request."""

from __future__ import annotations

import secrets
from typing import Any

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
