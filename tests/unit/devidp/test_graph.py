"""The development identity provider's groups: the overage marker in tokens and the Graph slice
(`/v1.0/me/transitiveMemberOf`) a gateway calls to resolve it, driven by the real msal and plain
HTTP over the emulator's TLS.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import msal
import pytest
import requests
from support.idp import authorize, msal_session

from devidp import RunningDevIdp

REDIRECT_URI = "http://localhost:8400/callback"
API_SCOPE = "api://upstream/read"
GRAPH_SCOPE = "https://graph.microsoft.com/GroupMember.Read.All"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GROUP_NAMESPACE = uuid.UUID("6f1b8e2a-3c4d-4e5f-9a0b-1c2d3e4f5a6b")  # groups.numbered_groups
CAROLS_GROUPS = [str(uuid.uuid5(GROUP_NAMESPACE, f"group-{i}")) for i in range(1, 251)]


@pytest.fixture
def http(idp: RunningDevIdp) -> Iterator[requests.Session]:
    """Closed after each test, so the emulator sees no idle TLS connections at shutdown."""
    with msal_session(idp.ca_path) as session:
        yield session


def signed_in(idp: RunningDevIdp, http: requests.Session, user: str) -> tuple[Any, dict[str, Any]]:
    """A confidential client app (own http_cache, ENTRA.md c.8) with `user` signed in."""
    app = msal.ConfidentialClientApplication(
        idp.client_id,
        client_credential=idp.client_secret,
        authority=idp.authority,
        instance_discovery=False,
        azure_region=False,
        http_client=http,
        http_cache={},
    )
    flow = app.initiate_auth_code_flow(
        [API_SCOPE], redirect_uri=REDIRECT_URI, response_mode="form_post"
    )
    answer = authorize(http, flow["auth_uri"], user)
    result: dict[str, Any] = app.acquire_token_by_auth_code_flow(flow, answer.fields)
    assert "access_token" in result, result
    return app, result


def unverified(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def graph_get(
    http: requests.Session, url: str, token: str | None, **params: str
) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return http.get(url, headers=headers, params=params or None)


# the overage marker


def test_carol_has_too_many_groups_for_her_tokens(
    idp: RunningDevIdp, http: requests.Session
) -> None:
    _, result = signed_in(idp, http, "carol")
    carol = idp.user("carol")
    assert carol.name == "Carol Many-Groups" and list(carol.groups) == CAROLS_GROUPS
    marker = {
        "_claim_names": {"groups": "src1"},
        "_claim_sources": {
            "src1": {
                "endpoint": f"https://graph.windows.net/{idp.tenant_id}/users/{carol.oid}"
                "/getMemberObjects"
            }
        },
    }
    for claims in (result["id_token_claims"], unverified(result["access_token"])):
        assert "groups" not in claims and "hasgroups" not in claims
        assert {k: claims[k] for k in marker} == marker
    alice = signed_in(idp, http, "alice")[1]["id_token_claims"]
    assert alice["groups"] == list(idp.user("alice").groups) and "_claim_names" not in alice


def test_overage_limit_is_a_control_operation(idp: RunningDevIdp, http: requests.Session) -> None:
    assert idp.groups_overage_limit == 200
    idp.set_groups_overage_limit(1)
    assert "groups" in unverified(idp.issue_access_token("alice"))  # one group: at the limit
    jose = unverified(idp.issue_id_token("jose"))
    assert "groups" not in jose and jose["_claim_names"] == {"groups": "src1"}
    response = http.post(f"{idp.control_url}/groups/overage-limit", json={"limit": 300})
    assert response.json() == {"ok": True}
    _, result = signed_in(idp, http, "carol")
    assert result["id_token_claims"]["groups"] == CAROLS_GROUPS
    state = http.get(f"{idp.control_url}/state").json()
    assert state["policies"]["groups_overage_limit"] == 300
    bad = http.post(f"{idp.control_url}/groups/overage-limit", json={"limit": -1})
    assert bad.status_code == 400
    idp.reset()
    assert idp.groups_overage_limit == 200
    assert "_claim_names" in unverified(idp.issue_access_token("carol"))


# Microsoft Graph


def test_gateway_pages_through_all_250_groups_with_a_graph_token(
    idp: RunningDevIdp, http: requests.Session
) -> None:
    app, _ = signed_in(idp, http, "carol")
    [account] = app.get_accounts()
    graph = app.acquire_token_silent_with_error([GRAPH_SCOPE], account)
    assert graph is not None and graph["token_source"] == "identity_provider"
    assert unverified(graph["access_token"])["aud"] == "https://graph.microsoft.com"
    url: str | None = f"{idp.graph_url}/me/transitiveMemberOf/microsoft.graph.group?$top=100"
    pages: list[dict[str, Any]] = []
    while url is not None:
        response = graph_get(http, url, graph["access_token"])
        assert response.status_code == 200, response.text
        pages.append(response.json())
        url = pages[-1].get("@odata.nextLink")
        assert url is None or url.startswith(f"{idp.graph_url}/me/transitiveMemberOf/")
    assert [len(p["value"]) for p in pages] == [100, 100, 50]
    assert "$top=100&$skiptoken=" in pages[0]["@odata.nextLink"]
    assert pages[0]["@odata.context"] == f"{idp.base_url}/v1.0/$metadata#groups"
    groups = [g for page in pages for g in page["value"]]
    assert [g["id"] for g in groups] == CAROLS_GROUPS
    assert [g["displayName"] for g in groups] == [f"Group {i:03d}" for i in range(1, 251)]
    assert {g["@odata.type"] for g in groups} == {"#microsoft.graph.group"}
    logged = idp.requests("graph")
    assert [(r.status, r.path) for r in logged] == [
        (200, "/v1.0/me/transitiveMemberOf/microsoft.graph.group")
    ] * 3
    assert logged[0].headers["Authorization"] == f"Bearer {graph['access_token']}"


def test_default_page_size_select_and_the_uncast_collection(
    idp: RunningDevIdp, http: requests.Session
) -> None:
    token = idp.issue_access_token("carol", scope="User.Read")
    assert unverified(token)["aud"] == GRAPH_APP_ID
    base = f"{idp.graph_url}/me/transitiveMemberOf"
    first = graph_get(http, f"{base}/microsoft.graph.group", token).json()
    assert len(first["value"]) == 100 and "$top" not in first["@odata.nextLink"]
    assert set(first["value"][0]) >= {"id", "displayName", "securityEnabled", "groupTypes"}
    everything = graph_get(http, base, token, **{"$top": "999", "$select": "id,displayName"})
    body = everything.json()
    assert "@odata.nextLink" not in body and len(body["value"]) == 250
    assert (
        body["@odata.context"] == f"{idp.base_url}/v1.0/$metadata#directoryObjects(id,displayName)"
    )
    assert body["value"][0] == {
        "@odata.type": "#microsoft.graph.group",
        "id": CAROLS_GROUPS[0],
        "displayName": "Group 001",
    }
    alice = graph_get(http, base, idp.issue_access_token("alice", scope="User.Read")).json()
    assert [g["displayName"] for g in alice["value"]] == ["Readers"]
    assert "@odata.nextLink" not in alice


def test_graph_refuses_tokens_it_should_not_accept(
    idp: RunningDevIdp, http: requests.Session
) -> None:
    url = f"{idp.graph_url}/me/transitiveMemberOf/microsoft.graph.group"
    now = int(time.time())
    cases = {
        None: "Access token is empty.",
        idp.issue_access_token("carol"): "Access token validation failure. Invalid audience.",
        idp.issue_access_token(
            "carol",
            scope="User.Read",
            claims={"iat": now - 7200, "nbf": now - 7200, "exp": now - 3600},
        ): "Lifetime validation failed, the token is expired.",
        idp.issue_access_token("carol", scope="User.Read", unknown_key=True): (
            "Access token validation failure."
        ),
        "not-a-jwt": "Access token validation failure.",
    }
    for token, message in cases.items():
        response = graph_get(http, url, token)
        assert response.status_code == 401, token
        error = response.json()["error"]
        assert (error["code"], error["message"]) == ("InvalidAuthenticationToken", message)
        assert set(error["innerError"]) == {"date", "request-id", "client-request-id"}
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith("Bearer ") and f'client_id="{GRAPH_APP_ID}"' in challenge
    app_token = idp.issue_access_token(None, scope="https://graph.microsoft.com/.default")
    refused = graph_get(http, url, app_token)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "BadRequest"
    assert [r.status for r in idp.requests("graph")] == [401] * len(cases) + [400]


def test_graph_validates_paging_parameters(idp: RunningDevIdp, http: requests.Session) -> None:
    url = f"{idp.graph_url}/me/transitiveMemberOf/microsoft.graph.group"
    token = idp.issue_access_token("carol", scope="User.Read")
    for top in ("0", "1000", "ten"):
        response = graph_get(http, url, token, **{"$top": top})
        assert response.status_code == 400
        assert response.json()["error"]["message"].startswith(
            f"Invalid page size specified: '{top}'"
        )
    page = graph_get(http, url, token, **{"$top": "5"}).json()
    next_link = page["@odata.nextLink"]
    assert graph_get(http, next_link, token).json()["value"][0]["displayName"] == "Group 006"
    alices = graph_get(http, next_link, idp.issue_access_token("alice", scope="User.Read"))
    assert alices.status_code == 400  # a skip token belongs to the user it was issued for
    garbage = graph_get(http, url, token, **{"$skiptoken": "%%%"})
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "Request_BadRequest"


def test_graph_faults_and_delays(idp: RunningDevIdp, http: requests.Session) -> None:
    url = f"{idp.graph_url}/me/transitiveMemberOf"
    token = idp.issue_access_token("carol", scope="User.Read")
    throttled = {"error": {"code": "TooManyRequests", "message": "Too many requests"}}
    idp.fail("graph", 429, throttled, headers={"Retry-After": "1"})
    response = graph_get(http, url, token)
    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    assert response.json() == throttled
    assert graph_get(http, url, token).status_code == 200
    via_http = http.post(
        f"{idp.control_url}/faults/fail", json={"endpoint": "graph", "status": 503}
    )
    assert via_http.json() == {"ok": True}
    assert graph_get(http, url, token).status_code == 503
    log = http.get(f"{idp.control_url}/requests", params={"endpoint": "graph"}).json()["requests"]
    assert [r["status"] for r in log] == [429, 200, 503]
