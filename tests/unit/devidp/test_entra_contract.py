"""The development identity provider driven by the real msal: the ENTRA.md (b) contract.

Every msal application here gets `instance_discovery=False`, `azure_region=False`, a session that
trusts only the emulator's CA, and a fresh `http_cache`, so msal's own error caches (ENTRA.md c.8)
never carry a fault from one test into the next.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import msal
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from support.certificates import certificate_pem, private_key_pem, rsa_key
from support.idp import AuthorizeResult, authorize, msal_session, parse_form_post

from devidp import (
    Client,
    DevIdpConfig,
    FederatedCredential,
    NonLoopbackRefused,
    RunningDevIdp,
    main,
    start,
)

REDIRECT_URI = "http://localhost:8400/callback"
API_SCOPE = "api://upstream/read"

App = Any  # msal ships no type information (mypy override: ignore_missing_imports)
MakeApp = Callable[..., App]


@pytest.fixture
def http(idp: RunningDevIdp) -> Iterator[requests.Session]:
    """Closed after each test, so the emulator sees no idle TLS connections at shutdown."""
    with msal_session(idp.ca_path) as session:
        yield session


@pytest.fixture
def make_app(idp: RunningDevIdp, http: requests.Session) -> MakeApp:
    """Per test, and every app gets its own http_cache: msal caches 400s for 60 s and 5xx for
    Retry-After (ENTRA.md c.8), which would carry one test's faults into the next."""

    def make(credential: object = None, client_id: str | None = None, **kw: Any) -> App:
        return msal.ConfidentialClientApplication(
            client_id or idp.client_id,
            client_credential=credential if credential is not None else idp.client_secret,
            authority=idp.authority,
            instance_discovery=False,
            azure_region=False,
            http_client=http,
            **{"http_cache": {}, **kw},
        )

    return make


def start_flow(app: App, *, scopes: list[str] | None = None, **kw: Any) -> dict[str, Any]:
    flow: dict[str, Any] = app.initiate_auth_code_flow(
        scopes or [API_SCOPE], redirect_uri=REDIRECT_URI, response_mode="form_post", **kw
    )
    return flow


def sign_in(
    app: App, http: requests.Session, user: str = "alice", **kw: Any
) -> tuple[dict[str, Any], dict[str, Any], AuthorizeResult]:
    flow = start_flow(app, **kw)
    answer = authorize(http, flow["auth_uri"], user)
    assert answer.status == 200, answer.page
    result: dict[str, Any] = app.acquire_token_by_auth_code_flow(dict(flow), answer.fields)
    return flow, result, answer


def jwks_verify(http: requests.Session, idp: RunningDevIdp, token: str, audience: str) -> Any:
    keys = jwt.PyJWKSet.from_dict(http.get(f"{idp.authority}/discovery/v2.0/keys").json())
    key = keys[jwt.get_unverified_header(token)["kid"]]
    return jwt.decode(token, key, algorithms=["RS256"], audience=audience, issuer=idp.issuer)


def unverified(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


# discovery


def test_discovery_document_has_the_entra_shape(idp: RunningDevIdp, http: requests.Session) -> None:
    doc = http.get(f"{idp.authority}/v2.0/.well-known/openid-configuration").json()
    assert doc["issuer"] == f"{idp.base_url}/{idp.tenant_id}/v2.0"
    assert doc["authorization_endpoint"] == f"{idp.authority}/oauth2/v2.0/authorize"
    assert doc["token_endpoint"] == f"{idp.authority}/oauth2/v2.0/token"
    assert doc["jwks_uri"] == f"{idp.authority}/discovery/v2.0/keys"
    assert doc["end_session_endpoint"] == f"{idp.authority}/oauth2/v2.0/logout"
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    alias = http.get(f"{idp.base_url}/organizations/v2.0/.well-known/openid-configuration").json()
    assert alias["issuer"] == f"{idp.base_url}/{{tenantid}}/v2.0"
    assert alias["token_endpoint"] == f"{idp.base_url}/organizations/oauth2/v2.0/token"
    missing = http.get(f"{idp.base_url}/nope/v2.0/.well-known/openid-configuration")
    assert missing.status_code == 400
    assert missing.json()["error_codes"] == [90002]


def test_discovery_fault_makes_the_msal_constructor_raise(
    idp: RunningDevIdp, make_app: MakeApp
) -> None:
    idp.fail("discovery", 400, {"error": "invalid_tenant"})
    with pytest.raises(ValueError, match="Unable to get authority configuration"):
        make_app()
    idp.fail("discovery", 503, "down")
    with pytest.raises(msal.exceptions.MsalServiceError, match="503"):
        make_app()
    assert [r.status for r in idp.requests("discovery")] == [400, 503]


# the authorization-code flow


def test_form_post_flow_signs_alice_in(
    idp: RunningDevIdp, make_app: MakeApp, http: requests.Session
) -> None:
    app = make_app()
    flow, result, answer = sign_in(app, http)
    assert answer.redirect_uri == REDIRECT_URI
    assert set(answer.fields) == {"code", "client_info", "state", "session_state"}
    assert answer.fields["state"] == flow["state"]
    assert result["token_source"] == "identity_provider"
    assert set(result["scope"].split()) == {API_SCOPE, "openid", "profile", "offline_access"}
    assert result["expires_in"] == 3600 and "refresh_token" in result
    assert result["id_token_claims"]["preferred_username"] == "alice@contoso.example"
    [account] = app.get_accounts()
    alice = idp.user("alice")
    assert account["home_account_id"] == f"{alice.oid}.{idp.tenant_id}"
    assert account["username"] == "alice@contoso.example"
    [post] = idp.token_requests()
    assert post.grant_type == "authorization_code"
    assert post.form["client_id"] == idp.client_id
    assert post.form["code"] == answer.fields["code"]
    assert post.form["redirect_uri"] == REDIRECT_URI
    assert post.form["code_verifier"] == flow["code_verifier"]
    assert post.headers["x-client-sku"] == "MSAL.Python"
    assert post.status == 200


def test_query_mode_flow_redirects_with_the_code(
    idp: RunningDevIdp, make_app: MakeApp, http: requests.Session
) -> None:
    app = make_app()
    with pytest.warns(UserWarning, match="form_post"):
        flow = app.initiate_auth_code_flow([API_SCOPE], redirect_uri=REDIRECT_URI)
    answer = authorize(http, flow["auth_uri"], "bob")
    assert answer.status == 302
    assert answer.redirect_uri == REDIRECT_URI
    result = app.acquire_token_by_auth_code_flow(flow, answer.fields)
    assert result["id_token_claims"]["name"] == "Bob Builder"


def test_id_token_has_entra_claims_and_verifies_against_jwks(
    idp: RunningDevIdp, make_app: MakeApp, http: requests.Session
) -> None:
    flow, result, _ = sign_in(make_app(), http)
    claims = jwks_verify(http, idp, result["id_token"], idp.client_id)
    alice = idp.user("alice")
    assert claims["nonce"] == hashlib.sha256(flow["nonce"].encode()).hexdigest()
    assert claims["ver"] == "2.0" and claims["tid"] == idp.tenant_id
    assert claims["oid"] == alice.oid and claims["email"] == "alice@contoso.example"
    assert claims["name"] == "Alice Example"
    assert claims["groups"] == list(alice.groups) and claims["roles"] == ["Reader"]
    assert {"iat", "nbf", "exp", "sub", "uti", "rh"} <= set(claims)
    assert "auth_time" not in claims
    access = jwks_verify(http, idp, result["access_token"], "api://upstream")
    assert access["scp"] == "read" and access["azp"] == idp.client_id
    assert access["oid"] == alice.oid and access["ver"] == "2.0"
    info = json.loads(base64.urlsafe_b64decode(result["client_info"] + "=="))
    assert info == {"uid": alice.oid, "utid": idp.tenant_id}


def test_non_ascii_user_and_max_age(
    idp: RunningDevIdp, make_app: MakeApp, http: requests.Session
) -> None:
    _, result, _ = sign_in(make_app(), http, "jose", max_age=60)
    claims = result["id_token_claims"]
    assert claims["name"] == "José Núñez"
    assert "email" not in claims
    assert abs(claims["auth_time"] - time.time()) < 30


def test_silent_call_is_served_from_the_cache(
    idp: RunningDevIdp, make_app: MakeApp, http: requests.Session
) -> None:
    app = make_app()
    sign_in(app, http)
    [account] = app.get_accounts()
    result = app.acquire_token_silent([API_SCOPE], account)
    assert result is not None and result["token_source"] == "cache"
    assert len(idp.token_requests()) == 1


def test_force_refresh_uses_the_refresh_token(
    idp: RunningDevIdp, make_app: MakeApp, http: requests.Session
) -> None:
    idp.set_lifetimes(expires_in=1800, refresh_in=900)
    app = make_app()
    _, first, _ = sign_in(app, http)
    assert first["expires_in"] == 1800 and "refresh_on" in first
    [account] = app.get_accounts()
    result = app.acquire_token_silent([API_SCOPE], account, force_refresh=True)
    assert result is not None and result["token_source"] == "identity_provider"
    assert result["access_token"] != first["access_token"]
    [refresh] = idp.token_requests("refresh_token")
    assert refresh.form["refresh_token"] == first["refresh_token"]


def test_strict_rotation_refuses_a_second_use(
    idp: RunningDevIdp, make_app: MakeApp, http: requests.Session
) -> None:
    idp.set_strict_rotation()
    app = make_app()
    _, first, _ = sign_in(app, http)
    rotated = app.acquire_token_by_refresh_token(first["refresh_token"], [API_SCOPE])
    assert "access_token" in rotated and rotated["refresh_token"] != first["refresh_token"]
    reused = app.acquire_token_by_refresh_token(first["refresh_token"], [API_SCOPE])
    assert reused["error"] == "invalid_grant"
    assert reused["error_codes"] == [9002313]


def test_revoked_refresh_token_is_invalid_grant(
    idp: RunningDevIdp, make_app: MakeApp, http: requests.Session
) -> None:
    app = make_app()
    sign_in(app, http)
    assert idp.revoke_refresh_tokens("alice") == 1
    [account] = app.get_accounts()
    result = app.acquire_token_silent_with_error([API_SCOPE], account, force_refresh=True)
    assert result is not None and result["error"] == "invalid_grant"
    assert result["error_description"].startswith("AADSTS50173:")


def test_replayed_code_is_invalid_grant(
    idp: RunningDevIdp, make_app: MakeApp, http: requests.Session
) -> None:
    app = make_app()
    flow, result, answer = sign_in(app, http)
    assert "access_token" in result
    replay = app.acquire_token_by_auth_code_flow(flow, answer.fields)
    assert replay["error"] == "invalid_grant" and replay["error_codes"] == [70008]
    assert {"timestamp", "trace_id", "correlation_id"} <= set(replay)


def test_pkce_mismatch_is_invalid_grant(make_app: MakeApp, http: requests.Session) -> None:
    app = make_app()
    flow = start_flow(app)
    answer = authorize(http, flow["auth_uri"])
    flow["code_verifier"] = "x" * 43
    result = app.acquire_token_by_auth_code_flow(flow, answer.fields)
    assert result["error"] == "invalid_grant"
    assert result["error_description"].startswith("AADSTS501481:")


def test_wrong_nonce_makes_msal_raise(
    idp: RunningDevIdp, make_app: MakeApp, http: requests.Session
) -> None:
    idp.set_token_faults(nonce="not-the-right-nonce")
    with pytest.raises(RuntimeError, match="not-the-right-nonce"):
        sign_in(make_app(), http)


def test_missing_id_token_is_accepted_by_msal(
    idp: RunningDevIdp, make_app: MakeApp, http: requests.Session
) -> None:
    idp.set_token_faults(omit_id_token=True)
    app = make_app()
    _, result, _ = sign_in(app, http)
    assert "id_token" not in result and "access_token" in result
    assert app.get_accounts()[0]["username"] == ""


def test_id_token_faults_change_only_the_id_token(
    idp: RunningDevIdp, make_app: MakeApp, http: requests.Session
) -> None:
    idp.set_token_faults(
        id_token_issuer="https://evil.example/v2.0",
        id_token_audience="someone-else",
        id_token_expired=True,
        id_token_unknown_key=True,
        omit_client_info=True,
    )
    _, result, _ = sign_in(make_app(), http)
    claims = result["id_token_claims"]
    assert claims["iss"] == "https://evil.example/v2.0" and claims["aud"] == "someone-else"
    assert claims["exp"] < time.time() - 3600
    published = {k["kid"] for k in http.get(f"{idp.authority}/discovery/v2.0/keys").json()["keys"]}
    assert jwt.get_unverified_header(result["id_token"])["kid"] not in published
    assert jwt.get_unverified_header(result["access_token"])["kid"] in published
    assert "client_info" not in result


# other grants


def test_client_credentials_gives_an_app_token_once(idp: RunningDevIdp, make_app: MakeApp) -> None:
    app = make_app()
    result = app.acquire_token_for_client(["api://upstream/.default"])
    assert set(result) >= {"access_token", "token_type", "expires_in"}
    assert not {"id_token", "client_info", "refresh_token"} & set(result)
    claims = unverified(result["access_token"])
    assert claims["aud"] == "api://upstream" and claims["idtyp"] == "app"
    assert app.acquire_token_for_client(["api://upstream/.default"])["token_source"] == "cache"
    assert len(idp.token_requests("client_credentials")) == 1
    wrong = app.acquire_token_for_client([API_SCOPE])
    assert wrong["error"] == "invalid_scope"


def test_on_behalf_of_exchanges_a_token_for_this_client(
    idp: RunningDevIdp, make_app: MakeApp, http: requests.Session
) -> None:
    app = make_app()
    _, incoming, _ = sign_in(app, http, scopes=[f"api://{idp.client_id}/access_as_user"])
    result = app.acquire_token_on_behalf_of(incoming["access_token"], [API_SCOPE])
    claims = unverified(result["access_token"])
    assert claims["aud"] == "api://upstream" and claims["oid"] == idp.user("alice").oid
    [obo] = idp.token_requests("urn:ietf:params:oauth:grant-type:jwt-bearer")
    assert obo.form["requested_token_use"] == "on_behalf_of"
    foreign = app.acquire_token_on_behalf_of(result["access_token"], [API_SCOPE])
    assert foreign["error"] == "invalid_grant"  # its audience is api://upstream, not this client


def test_bad_client_secret_is_invalid_client(idp: RunningDevIdp, make_app: MakeApp) -> None:
    result = make_app("wrong secret").acquire_token_for_client(["api://upstream/.default"])
    assert result["error"] == "invalid_client"
    assert result["error_description"].startswith("AADSTS7000215:")
    assert [r.status for r in idp.token_requests()] == [401]


def test_http_basic_client_authentication(idp: RunningDevIdp, http: requests.Session) -> None:
    assert idp.client_secret is not None
    response = http.post(
        f"{idp.authority}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "scope": "api://upstream/.default"},
        auth=(idp.client_id, idp.client_secret),
    )
    assert response.status_code == 200 and "access_token" in response.json()


def _certificate() -> tuple[rsa.RSAPrivateKey, str, str]:
    key = rsa_key()
    return key, private_key_pem(key), certificate_pem(key, "devidp test client")


def test_certificate_and_federated_client_assertions(idp: RunningDevIdp, make_app: MakeApp) -> None:
    key, key_pem, cert_pem = _certificate()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    federated = FederatedCredential("https://issuer.test", "system:sa:app", public_pem.decode())
    idp.register_client(
        Client("cert-client", certificates_pem=(cert_pem,), federated_credentials=(federated,))
    )
    by_cert = make_app({"private_key": key_pem, "public_certificate": cert_pem}, "cert-client")
    assert "access_token" in by_cert.acquire_token_for_client(["api://upstream/.default"])

    def assertion(audience: str = "api://AzureADTokenExchange") -> str:
        now = int(time.time())
        claims = {"iss": "https://issuer.test", "sub": "system:sa:app", "aud": audience}
        return jwt.encode({**claims, "iat": now, "exp": now + 600}, key, algorithm="RS256")

    by_federation = make_app({"client_assertion": assertion}, "cert-client")
    result = by_federation.acquire_token_for_client(["api://upstream/.default"])
    assert unverified(result["access_token"])["azpacr"] == "2"
    wrong = make_app({"client_assertion": lambda: assertion("api://other")}, "cert-client")
    assert wrong.acquire_token_for_client(["api://upstream/.default"])["error"] == "invalid_client"


# faults and control


def test_token_endpoint_5xx_raises_msal_service_error(
    idp: RunningDevIdp, make_app: MakeApp
) -> None:
    idp.fail("token", 503, {"error": "temporarily_unavailable"})
    with pytest.raises(msal.exceptions.MsalServiceError, match="503"):
        make_app().acquire_token_for_client(["api://upstream/.default"])
    assert [r.status for r in idp.token_requests()] == [503]


def test_delay_fault_holds_the_response(idp: RunningDevIdp, make_app: MakeApp) -> None:
    idp.delay("token", 0.3, times=1)
    began = time.monotonic()
    assert "access_token" in make_app().acquire_token_for_client(["api://upstream/.default"])
    assert time.monotonic() - began >= 0.3


def test_authorize_error_reaches_the_client_unescaped_for_it_to_escape(
    idp: RunningDevIdp, make_app: MakeApp, http: requests.Session
) -> None:
    idp.fail_authorize()
    app = make_app()
    flow = start_flow(app)
    answer = authorize(http, flow["auth_uri"])
    assert answer.fields["error"] == "access_denied"
    assert "<script>" in answer.fields["error_description"]
    assert "<script>alert" not in answer.page  # the form_post page itself escapes it
    result = app.acquire_token_by_auth_code_flow(flow, answer.fields)
    assert result["error"] == "access_denied"
    assert idp.token_requests() == []


def test_form_post_page_escapes_values(make_app: MakeApp, http: requests.Session) -> None:
    evil = '"><script>alert(1)</script>'
    flow = start_flow(make_app(), state=evil)
    answer = authorize(http, flow["auth_uri"])
    assert "<script>alert(1)" not in answer.page
    assert 'value="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in answer.page
    form = parse_form_post(answer.page)
    assert (form.action, form.method, form.fields["state"]) == (REDIRECT_URI, "post", evil)


def test_unregistered_redirect_uri_gets_a_page_not_a_redirect(
    idp: RunningDevIdp, make_app: MakeApp, http: requests.Session
) -> None:
    idp.register_client(Client("strict", "s3cret", redirect_uris=("https://app.test/cb",)))
    app = make_app("s3cret", "strict")
    flow = start_flow(app)
    answer = authorize(http, flow["auth_uri"])
    assert answer.status == 400 and "AADSTS50011" in answer.page


def test_sign_in_page_lets_people_pick_a_user(
    idp: RunningDevIdp, make_app: MakeApp, http: requests.Session
) -> None:
    app = make_app()
    flow = start_flow(app, login_hint="bob@contoso.example")
    page = authorize(http, flow["auth_uri"], user=None)
    assert page.status == 200 and "Pick an account" in page.page
    assert "José Núñez" in page.page and 'class="user hint"' in page.page
    form = parse_form_post(page.page)
    assert form.action == f"/{idp.tenant_id}/login"
    response = http.post(idp.base_url + form.action, data={**form.fields, "devidp_user": "bob"})
    assert response.status_code == 200
    result = app.acquire_token_by_auth_code_flow(flow, parse_form_post(response.text).fields)
    assert result["id_token_claims"]["preferred_username"] == "bob@contoso.example"


def test_logout_redirects_only_to_registered_origins(
    idp: RunningDevIdp, http: requests.Session
) -> None:
    url = f"{idp.authority}/oauth2/v2.0/logout"
    back = http.get(
        url,
        params={"post_logout_redirect_uri": "http://localhost:8400/bye", "state": "s"},
        allow_redirects=False,
    )
    assert back.headers["Location"] == "http://localhost:8400/bye?state=s"
    idp.register_client(Client("strict", redirect_uris=("https://app.test/cb",)))
    off_origin = http.get(
        url,
        params={"post_logout_redirect_uri": "https://evil.test/", "client_id": "strict"},
        allow_redirects=False,
    )
    assert off_origin.status_code == 200 and "signed out" in off_origin.text


def test_key_rotation_and_minted_tokens(idp: RunningDevIdp, http: requests.Session) -> None:
    old = idp.signing_kid
    new = idp.rotate_signing_key()
    token = idp.issue_access_token("alice", claims={"tid": None})
    assert jwt.get_unverified_header(token)["kid"] == new != old
    claims = jwks_verify(http, idp, token, "api://upstream")
    assert "tid" not in claims and claims["scp"] == "read"
    response = http.get(
        f"{idp.base_url}/oidc/userinfo", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.json()["name"] == "Alice Example"


def test_http_control_api(idp: RunningDevIdp, http: requests.Session) -> None:
    response = http.post(
        f"{idp.control_url}/faults/fail", json={"endpoint": "jwks", "status": 500, "times": 2}
    )
    assert response.json() == {"ok": True}
    keys = f"{idp.authority}/discovery/v2.0/keys"
    assert [http.get(keys).status_code for _ in range(3)] == [500, 500, 200]
    bad = http.post(f"{idp.control_url}/faults/fail", json={"endpoint": "nope", "status": 500})
    assert bad.status_code == 400 and "unknown endpoint" in bad.json()["error"]
    state = http.get(f"{idp.control_url}/state").json()
    assert state["tenant_id"] == idp.tenant_id and state["users"][0]["username"] == "alice"
    log = http.get(f"{idp.control_url}/requests", params={"endpoint": "jwks"}).json()
    assert [r["status"] for r in log["requests"]] == [500, 500, 200]


async def test_non_loopback_address_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(NonLoopbackRefused, match="--allow-non-loopback"):
        await start(DevIdpConfig(host="0.0.0.0", port=0))  # noqa: S104 - the refused case
    assert await asyncio.to_thread(main, ["--host", "192.0.2.1", "--port", "0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing to listen on '192.0.2.1'" in err


# consent per resource

REPORTS_SCOPE = "api://reports/read"


def test_refresh_for_an_unconsented_resource_is_consent_required(
    idp: RunningDevIdp, make_app: MakeApp, http: requests.Session
) -> None:
    idp.set_strict_rotation()
    idp.require_consent("api://reports")
    app = make_app()
    sign_in(app, http)
    [account] = app.get_accounts()
    refused = app.acquire_token_silent_with_error([REPORTS_SCOPE], account)
    assert refused["error"] == "invalid_grant" and refused["error_codes"] == [65001]
    assert refused["error_description"].startswith(
        "AADSTS65001: The user or administrator has not consented to use the application with "
        f"ID '{idp.client_id}'"
    )
    assert refused["suberror"] == refused["classification"] == "consent_required"
    # A refused refresh does not consume the refresh token, even under strict rotation.
    again = app.acquire_token_silent_with_error([API_SCOPE], account, force_refresh=True)
    assert again is not None and "access_token" in again
    assert [r.status for r in idp.token_requests("refresh_token")] == [400, 200]


def test_authorizing_a_resource_records_consent_per_user(
    idp: RunningDevIdp, make_app: MakeApp, http: requests.Session
) -> None:
    http.post(f"{idp.control_url}/consent/require", json={"resource": "api://reports"})
    app = make_app()
    # Entra lets an authorize request name several resources; the code redeems for one.
    flow = start_flow(app, scopes=[API_SCOPE, REPORTS_SCOPE])
    answer = authorize(http, flow["auth_uri"])
    assert answer.status == 200, answer.page
    first = app.acquire_token_by_auth_code_flow(flow, answer.fields, scopes=[API_SCOPE])
    assert unverified(first["access_token"])["aud"] == "api://upstream"
    [account] = app.get_accounts()
    reports = app.acquire_token_silent_with_error([REPORTS_SCOPE], account)
    assert reports is not None and unverified(reports["access_token"])["aud"] == "api://reports"
    msal_http_cache: dict[str, Any] = {}
    bob_app = make_app(http_cache=msal_http_cache)
    sign_in(bob_app, http, "bob")
    [bob] = bob_app.get_accounts()
    assert bob_app.acquire_token_silent_with_error([REPORTS_SCOPE], bob)["error_codes"] == [65001]
    grant = {"user": "bob", "resource": "api://reports/"}
    assert http.post(f"{idp.control_url}/consent/grant", json=grant).json() == {"ok": True}
    msal_http_cache.clear()  # msal replays a 400 for 60 s without asking (ENTRA.md c.8)
    assert "access_token" in bob_app.acquire_token_silent_with_error([REPORTS_SCOPE], bob)
    policies = http.get(f"{idp.control_url}/state").json()["policies"]
    assert policies["consent_required"] == ["api://reports"]
    idp.reset()
    assert http.get(f"{idp.control_url}/state").json()["policies"]["consent_required"] == []


def test_code_redeemed_for_an_unconsented_resource_is_consent_required(
    idp: RunningDevIdp, make_app: MakeApp, http: requests.Session
) -> None:
    idp.require_consent("api://reports")
    app = make_app()
    flow = start_flow(app)
    answer = authorize(http, flow["auth_uri"])
    flow["scope"] = [*flow["scope"], REPORTS_SCOPE]  # msal only lets us redeem for a subset
    result = app.acquire_token_by_auth_code_flow(flow, answer.fields, scopes=[REPORTS_SCOPE])
    assert result["error"] == "invalid_grant" and result["suberror"] == "consent_required"
    [post] = idp.token_requests("authorization_code")
    assert REPORTS_SCOPE in post.form["scope"].split() and post.status == 400


# claims requests: client capabilities and claims challenges

ACRS_C1 = '{"access_token":{"acrs":{"essential":true,"value":"c1"}}}'


def test_client_capabilities_put_xms_cc_in_access_tokens(
    idp: RunningDevIdp, make_app: MakeApp, http: requests.Session
) -> None:
    app = make_app(client_capabilities=["CP1"])
    flow, result, _ = sign_in(app, http)
    sent = '{"access_token": {"xms_cc": {"values": ["CP1"]}}}'  # msal's json.dumps, verbatim
    assert parse_qs(urlsplit(flow["auth_uri"]).query)["claims"] == [sent]
    assert unverified(result["access_token"])["xms_cc"] == ["CP1"]
    [account] = app.get_accounts()
    refreshed = app.acquire_token_silent_with_error([API_SCOPE], account, force_refresh=True)
    assert unverified(refreshed["access_token"])["xms_cc"] == ["CP1"]
    assert [r.form["claims"] for r in idp.token_requests()] == [sent, sent]


def test_claims_challenge_is_merged_with_capabilities_and_yields_acrs(
    idp: RunningDevIdp, make_app: MakeApp, http: requests.Session
) -> None:
    plain = make_app()
    sign_in(plain, http)
    [account] = plain.get_accounts()
    stepped = plain.acquire_token_silent_with_error([API_SCOPE], account, claims_challenge=ACRS_C1)
    assert unverified(stepped["access_token"])["acrs"] == ["c1"]
    assert idp.token_requests("refresh_token")[-1].form["claims"] == ACRS_C1  # passed verbatim
    capable = make_app(client_capabilities=["CP1"])
    flow, result, _ = sign_in(capable, http, claims_challenge=ACRS_C1)
    merged = (
        '{"access_token": {"acrs": {"essential": true, "value": "c1"}, '
        '"xms_cc": {"values": ["CP1"]}}}'
    )
    assert parse_qs(urlsplit(flow["auth_uri"]).query)["claims"] == [merged]
    assert idp.token_requests("authorization_code")[-1].form["claims"] == merged
    claims = unverified(result["access_token"])
    assert (claims["acrs"], claims["xms_cc"]) == (["c1"], ["CP1"])
    [account] = capable.get_accounts()
    several = '{"access_token":{"acrs":{"essential":true,"values":["c1","c2"]}}}'
    again = capable.acquire_token_silent_with_error([API_SCOPE], account, claims_challenge=several)
    assert unverified(again["access_token"])["acrs"] == ["c1", "c2"]


def test_malformed_claims_are_invalid_request(
    idp: RunningDevIdp, make_app: MakeApp, http: requests.Session
) -> None:
    _, result, _ = sign_in(make_app(), http)
    response = http.post(
        f"{idp.authority}/oauth2/v2.0/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": result["refresh_token"],
            "scope": API_SCOPE,
            "claims": "[not an object]",
        },
        auth=(idp.client_id, idp.client_secret or ""),
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


def test_step_up_for_refresh_needs_an_interactive_sign_in(
    idp: RunningDevIdp, make_app: MakeApp, http: requests.Session
) -> None:
    app = make_app(client_capabilities=["CP1"])
    sign_in(app, http)
    [account] = app.get_accounts()
    response = http.post(f"{idp.control_url}/claims/refresh", json={"acrs": "c1"})
    assert response.json() == {"ok": True} and idp.refresh_acrs == "c1"
    for challenge in (None, ACRS_C1):  # asking for it silently is not enough either
        refused = app.acquire_token_silent_with_error(
            [API_SCOPE], account, force_refresh=True, claims_challenge=challenge
        )
        assert refused["error"] == "invalid_grant" and refused["error_codes"] == [50076]
        assert json.loads(refused["claims"]) == json.loads(ACRS_C1)
    assert [r.status for r in idp.token_requests("refresh_token")] == [400, 400]
    # The gateway signs the user in again with the challenge from the error.
    _, result, _ = sign_in(app, http, claims_challenge=refused["claims"])
    assert unverified(result["access_token"])["acrs"] == ["c1"]
    [account] = app.get_accounts()
    later = app.acquire_token_silent_with_error([API_SCOPE], account, force_refresh=True)
    assert "access_token" in later and "acrs" not in unverified(later["access_token"])
    asked = app.acquire_token_silent_with_error([API_SCOPE], account, claims_challenge=ACRS_C1)
    assert unverified(asked["access_token"])["acrs"] == ["c1"]
    msal_http_cache: dict[str, Any] = {}
    other = make_app(http_cache=msal_http_cache)
    sign_in(other, http, "bob")
    [bob] = other.get_accounts()
    refused = other.acquire_token_silent_with_error([API_SCOPE], bob, force_refresh=True)
    assert refused["error_codes"] == [50076]
    idp.require_claims_for_refresh(None)
    msal_http_cache.clear()  # msal replays a 400 for 60 s without asking (ENTRA.md c.8)
    allowed = other.acquire_token_silent_with_error([API_SCOPE], bob, force_refresh=True)
    assert "access_token" in allowed


def test_reset_clears_the_directory_policies(idp: RunningDevIdp, http: requests.Session) -> None:
    idp.set_groups_overage_limit(5)
    idp.require_consent("api://reports")
    idp.grant_consent("alice", "api://reports")
    idp.require_claims_for_refresh("c1")
    policies = http.get(f"{idp.control_url}/state").json()["policies"]
    alice = idp.user("alice")
    assert policies == {
        "groups_overage_limit": 5,
        "consent_required": ["api://reports"],
        "consents": [[alice.oid, idp.client_id, "api://reports"]],
        "refresh_acrs": "c1",
    }
    assert http.post(f"{idp.control_url}/reset").json() == {"ok": True}
    policies = http.get(f"{idp.control_url}/state").json()["policies"]
    assert policies == {
        "groups_overage_limit": 200,
        "consent_required": [],
        "consents": [],
        "refresh_acrs": None,
    }
    with pytest.raises(KeyError):
        idp.grant_consent("nobody", "api://reports")
