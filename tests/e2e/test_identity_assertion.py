"""The signed identity assertion through the real gateway: the upstream verifies who the user is
with the keys published at /.auth/keys, and a client cannot supply its own assertion."""

from __future__ import annotations

import secrets

import jwt
from support.browser import API
from support.fixtures import Launch, signed_in
from support.threaded import ThreadedServer
from support.upstream import upstream_headers


async def test_upstream_verifies_the_assertion_with_published_keys(
    launch: Launch, upstream: ThreadedServer
) -> None:
    running = await launch(assertion={"enabled": True}, cookie_secret=secrets.token_urlsafe(32))
    await signed_in(running, user="jose")
    seen = upstream_headers(await (await running.browser.get("/x", headers=API)).json())
    token = seen["x-gateway-assertion"][0]
    jwks = await (await running.browser.get("/.auth/keys", headers=API)).json()
    header = jwt.get_unverified_header(token)
    [key] = [k for k in jwt.PyJWKSet.from_dict(jwks).keys if k.key_id == header["kid"]]
    claims = jwt.decode(
        token,
        key,
        algorithms=["ES256"],
        audience=upstream.url,
        issuer="https://app.test",
        options={"require": ["exp", "iat", "sub"]},
    )
    assert claims["name"] == "José Núñez"
    assert claims["sub"].startswith("2d9a4e3f-6c7b-4a5d-8e1f-3a4b5c6d7e8f.")
    assert claims["exp"] - claims["iat"] == 120
    assert "d" not in jwks["keys"][0]


async def test_clients_cannot_send_their_own_assertion(launch: Launch) -> None:
    running = await launch(assertion={"enabled": True}, proxy={"public_paths": "/open/"})
    response = await running.browser.get(
        "/open/x", headers={**API, "X-Gateway-Assertion": "forged.jwt.value"}
    )
    assert "x-gateway-assertion" not in upstream_headers(await response.json())


async def test_keys_are_not_served_when_assertions_are_off(launch: Launch) -> None:
    running = await launch()
    assert (await running.browser.get("/.auth/keys", headers=API)).status == 404
