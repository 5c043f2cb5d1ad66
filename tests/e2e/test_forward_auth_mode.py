"""GATEWAY_MODE=forward-auth through the real gateway, with no upstream configured: it is ready
without one, answers /.auth/verify as in proxy mode (plus the signed assertion, when on), and
answers every other path with the one error renderer's 404 (a page for browsers, JSON for API
clients) that says it relays nothing. With nginx in front of it:
tests/security/test_forward_auth_nginx.py.
"""

from __future__ import annotations

from typing import Any

import jwt
from support.browser import API, NAVIGATE
from support.fixtures import Launch, Running
from support.metrics import sample, scrape
from support.ports import free_port

from gateway.keys import UPSTREAM, UPSTREAM_POOL

FORWARD_AUTH: dict[str, Any] = {"mode": "forward-auth", "upstream": None}
NOT_RELAYED = "only answers forward-auth checks (/.auth/verify)"


async def sign_in(running: Running, back_to: str = "/app1/", user: str = "alice") -> None:
    """Sign in at the gateway's own sign-in endpoint: in this mode no page of its own sends a
    browser there (the proxy in front does)."""
    start = await running.browser.get(f"/.auth/login/aad?post_login_redirect_uri={back_to}")
    assert start.status == 302, await start.text()
    auth = await running.browser.authorize(start.headers["Location"], user)
    done = await running.browser.deliver(auth)
    assert done.status == 302
    assert done.headers["Location"] == back_to


async def test_ready_without_an_upstream_and_no_connection_pool_is_opened(launch: Launch) -> None:
    running = await launch(**FORWARD_AUTH)
    response = await running.browser.get("/.auth/readyz", headers=API)
    assert response.status == 200
    assert (await response.json())["checks"] == {"store": "ok", "identity_provider": "ok"}
    assert UPSTREAM_POOL not in running.app
    assert UPSTREAM not in running.app


async def test_any_other_path_is_a_404_page_for_a_browser(launch: Launch) -> None:
    running = await launch(**FORWARD_AUTH)
    for path in ("/", "/app1/reports?year=2026", "/favicon.ico"):
        response = await running.browser.get(path, headers=NAVIGATE)
        assert response.status == 404, path
        assert response.headers["Content-Type"].startswith("text/html")
        page = await response.text()
        assert NOT_RELAYED in page
        assert "Location" not in response.headers  # never a sign-in redirect: nothing is behind
        assert response.headers["Cache-Control"] == "no-store"


async def test_any_other_path_is_a_404_json_answer_for_an_api_client(launch: Launch) -> None:
    running = await launch(**FORWARD_AUTH)
    await sign_in(running)  # signed in or not: nothing is relayed
    for method in ("GET", "POST", "DELETE", "OPTIONS"):
        async with running.browser.session.request(
            method, running.url + "/api/orders/7", headers=API, data=b"{}"
        ) as response:
            assert response.status == 404, method
            body = await response.json()
            assert body["error"] == "not_found"
            assert NOT_RELAYED in body["message"]
            assert body["request_id"] == response.headers["X-Request-Id"]


async def test_verify_answers_as_in_proxy_mode(launch: Launch) -> None:
    running = await launch(**FORWARD_AUTH)
    anonymous = await running.browser.get("/.auth/verify", headers=API)
    assert anonymous.status == 401
    assert anonymous.headers["WWW-Authenticate"].startswith('Bearer realm="https://app.test"')
    await sign_in(running)
    verified = await running.browser.get("/.auth/verify", headers=API)
    assert verified.status == 200
    assert verified.headers["X-MS-CLIENT-PRINCIPAL-NAME"] == "alice@contoso.example"
    assert "X-Gateway-Assertion" not in verified.headers  # assertions are off
    me = await running.browser.get("/.auth/me", headers=API)
    assert (await me.json())[0]["user_id"] == "alice@contoso.example"


async def test_rules_judge_the_original_request_a_trusted_proxy_names(launch: Launch) -> None:
    """The same trust rules as proxy mode: X-Original-URI/-Method only from a listed proxy."""
    running = await launch(
        **FORWARD_AUTH,
        policy={"rules": [{"path": "/app2/admin/", "allow": "deny"}]},
        proxy={"public_paths": "/app1/static/", "trusted_proxies": "127.0.0.1/32"},
    )
    await sign_in(running)
    for target, expected in (
        ("/app1/", 200),
        ("/app2/admin/users", 403),
        ("/app2/%61dmin/users", 400),  # an encoded path a rule could miss: ambiguous
        ("/app2/", 200),
    ):
        response = await running.browser.get(
            "/.auth/verify", headers={**API, "X-Original-URI": target, "X-Original-Method": "GET"}
        )
        assert response.status == expected, target
    running.browser.jar.clear()
    public = await running.browser.get(
        "/.auth/verify", headers={**API, "X-Original-URI": "/app1/static/logo.png"}
    )
    assert public.status == 200
    assert "X-MS-CLIENT-PRINCIPAL" not in public.headers


async def test_the_verify_answer_carries_an_assertion_for_the_configured_audience(
    launch: Launch,
) -> None:
    audience = "https://apps.contoso.example"
    running = await launch(**FORWARD_AUTH, assertion={"enabled": True, "audience": audience})
    await sign_in(running, user="jose")
    verified = await running.browser.get("/.auth/verify", headers=API)
    assert verified.status == 200
    token = verified.headers["X-Gateway-Assertion"]
    jwks = await (await running.browser.get("/.auth/keys", headers=API)).json()
    header = jwt.get_unverified_header(token)
    [key] = [k for k in jwt.PyJWKSet.from_dict(jwks).keys if k.key_id == header["kid"]]
    claims = jwt.decode(
        token, key, algorithms=["ES256"], audience=audience, issuer="https://app.test"
    )
    assert claims["name"] == "José Núñez"


async def test_requests_are_counted_by_route_class(launch: Launch) -> None:
    port = free_port()
    running = await launch(**FORWARD_AUTH, metrics_listen=f"127.0.0.1:{port}")
    assert (await running.browser.get("/.auth/verify", headers=API)).status == 401
    assert (await running.browser.get("/elsewhere", headers=API)).status == 404
    text = await scrape(port)
    assert sample(text, 'msal_gateway_requests_total{route="auth",status="401"}') == 1
    assert sample(text, 'msal_gateway_requests_total{route="proxy",status="404"}') == 1
