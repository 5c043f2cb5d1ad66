"""Beyond the first token: group membership through Microsoft Graph for users over the overage
limit, consent for another downstream audience, and Conditional Access claims challenges from the
upstream, answered silently when possible and through sign-in when not."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from support.browser import API
from support.fixtures import Launch, Running, signed_in
from support.upstream import upstream_headers

SCOPE = "api://upstream/read"
REPORTS = "api://reports/Read"


def bearer_claims(seen: dict[str, list[str]]) -> dict[str, Any]:
    token = seen["authorization"][0].removeprefix("Bearer ")
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


async def follow_sign_in(running: Running, location: str, user: str = "alice") -> str:
    """Walk a sign-in the gateway sent the browser to; return where it lands afterwards."""
    start = await running.browser.get(location)
    assert start.status == 302, await start.text()
    auth = await running.browser.authorize(start.headers["Location"], user)
    done = await running.browser.deliver(auth)
    assert done.status == 302, await done.text()
    return done.headers["Location"]


async def test_overage_groups_come_from_graph_all_of_them(launch: Launch, idp: Any) -> None:
    running = await launch(
        groups={"graph_url": idp.graph_url, "graph_page_size": 100, "max_header_bytes": 20000}
    )
    await signed_in(running, user="carol")
    graph_calls = idp.requests("graph")
    assert len(graph_calls) == 3  # 100 + 100 + 50, following @odata.nextLink
    seen = upstream_headers(await (await running.browser.get("/who", headers=API)).json())
    groups = seen["x-forwarded-groups"][0].split(",")
    assert len(groups) == 250 and len(set(groups)) == 250
    principal = json.loads(base64.b64decode(seen["x-ms-client-principal"][0]))
    assert not [c for c in principal["claims"] if c["typ"] == "groups"]  # as issued: the marker
    assert any(c["typ"] == "_claim_names" for c in principal["claims"])


async def test_overage_groups_over_the_header_limit_are_left_out(
    launch: Launch, idp: Any, caplog: pytest.LogCaptureFixture
) -> None:
    running = await launch(groups={"graph_url": idp.graph_url})  # default limit: 8000 bytes
    await signed_in(running, user="carol")
    seen = upstream_headers(await (await running.browser.get("/who", headers=API)).json())
    assert "x-forwarded-groups" not in seen  # never a partial list
    assert seen["x-ms-client-principal-name"] == ["carol@contoso.example"]
    assert "X-Forwarded-Groups is" in caplog.text


async def test_graph_failure_fails_the_sign_in_closed(launch: Launch, idp: Any) -> None:
    running = await launch(groups={"graph_url": idp.graph_url})
    idp.fail("graph", 503, {"error": {"code": "serviceNotAvailable"}})
    response = await running.browser.sign_in("/", "carol")
    assert response.status == 502
    assert running.browser.cookie(running.settings.session_cookie_name) is None


async def test_route_needing_consent_sends_the_browser_through_sign_in(
    launch: Launch, idp: Any
) -> None:
    idp.require_consent("api://reports")
    running = await launch(
        scopes=SCOPE, tokens={"routes": [{"path": "/reports/", "scopes": REPORTS}]}
    )
    await signed_in(running)
    api = await running.browser.get("/reports/q3", headers=API)
    assert api.status == 401
    challenge = api.headers["WWW-Authenticate"]
    assert 'error="interaction_required"' in challenge and REPORTS in challenge
    # The session itself is fine: other routes keep working.
    assert (await running.browser.get("/orders", headers=API)).status == 200
    page = await running.browser.get("/reports/q3")
    assert page.status == 302
    query = parse_qs(urlsplit(page.headers["Location"]).query)
    assert query["scope"] == [REPORTS]
    assert await follow_sign_in(running, page.headers["Location"]) == "/reports/q3"
    seen = upstream_headers(await (await running.browser.get("/reports/q3", headers=API)).json())
    assert bearer_claims(seen)["aud"] == "api://reports"


async def test_unconfigured_scope_cannot_be_requested_at_sign_in(launch: Launch) -> None:
    running = await launch(scopes=SCOPE)
    response = await running.browser.get(
        "/.auth/login/aad?scope=https://graph.microsoft.com/.default"
    )
    assert response.status == 400


async def test_claims_challenge_is_answered_silently_and_replayed(launch: Launch, idp: Any) -> None:
    running = await launch(scopes=SCOPE, tokens={"client_capabilities": "CP1"})
    await signed_in(running)
    idp.clear_log()
    answer = await running.browser.get("/_cae", headers=API)
    assert answer.status == 200, await answer.text()
    claims = bearer_claims(upstream_headers(await answer.json()))
    assert claims["acrs"] == ["c1"] and claims["xms_cc"] == ["CP1"]
    [refresh] = idp.token_requests("refresh_token")
    assert '"acrs"' in refresh.form["claims"]


async def test_claims_challenge_on_a_request_with_a_body_goes_to_the_client(
    launch: Launch, idp: Any
) -> None:
    running = await launch(scopes=SCOPE, tokens={"client_capabilities": "CP1"})
    await signed_in(running)
    first = await running.browser.session.post(
        running.url + "/_cae", data=b'{"order": 1}', headers=API
    )
    await first.read()
    assert first.status == 401  # not replayed: the body is gone
    assert 'error="insufficient_claims"' in first.headers["WWW-Authenticate"]
    again = await running.browser.session.post(
        running.url + "/_cae", data=b'{"order": 1}', headers=API
    )
    assert again.status == 200  # the token with the claims was waiting for the retry
    assert (await again.json())["body_length"] == len(b'{"order": 1}')


async def test_claims_challenge_needing_the_user_goes_through_sign_in(
    launch: Launch, idp: Any
) -> None:
    idp.require_claims_for_refresh("c1")
    running = await launch(scopes=SCOPE, tokens={"client_capabilities": "CP1"})
    await signed_in(running)
    api = await running.browser.get("/_cae", headers=API)
    assert api.status == 401
    assert 'error="insufficient_claims"' in api.headers["WWW-Authenticate"]
    page = await running.browser.get("/_cae")
    assert page.status == 302
    query = parse_qs(urlsplit(page.headers["Location"]).query)
    assert json.loads(query["claims"][0])["access_token"]["acrs"]["value"] == "c1"
    assert await follow_sign_in(running, page.headers["Location"]) == "/_cae"
    answer = await running.browser.get("/_cae", headers=API)
    assert answer.status == 200, await answer.text()
    assert bearer_claims(upstream_headers(await answer.json()))["acrs"] == ["c1"]
