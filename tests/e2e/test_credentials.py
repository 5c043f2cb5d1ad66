"""Client credentials without a secret: a certificate (RSA, PEM) and workload identity federation
(a token file re-read at each use), for sign-in and for refresh, against the development identity
provider, which verifies the assertions. Plus /.auth/verify for forward-auth."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from support.browser import API
from support.certificates import certificate_pem, private_key_pem, rsa_key
from support.fixtures import Launch, signed_in

from devidp.config import Client, FederatedCredential

FEDERATION_ISSUER = "https://kubernetes.test/oidc"
FEDERATION_SUBJECT = "system:serviceaccount:shop:gateway"


async def test_certificate_credential_signs_in_and_refreshes(
    launch: Launch, idp: Any, tmp_path: Path
) -> None:
    key = rsa_key()
    cert = certificate_pem(key)
    client_id = str(uuid.uuid4())
    idp.register_client(Client(client_id=client_id, certificates_pem=(cert,)))
    pem_file = tmp_path / "gateway.pem"
    pem_file.write_text(private_key_pem(key) + cert)
    running = await launch(
        client_id=client_id,
        client_secret=None,
        client_certificate_file=pem_file,
        scopes="api://upstream/read",
    )
    await signed_in(running)
    assert (await running.browser.get("/x", headers=API)).status == 200
    refreshed = await running.browser.session.post(running.url + "/.auth/refresh", headers=API)
    await refreshed.read()
    assert refreshed.status == 200
    token_requests = idp.token_requests()
    assert [r.grant_type for r in token_requests] == ["authorization_code", "refresh_token"]
    for request in token_requests:
        assert "client_secret" not in request.form
        assert request.form["client_assertion_type"].endswith("jwt-bearer")


async def test_wrong_certificate_is_a_clear_sign_in_error(
    launch: Launch, idp: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registered, used = rsa_key(), rsa_key()
    client_id = str(uuid.uuid4())
    idp.register_client(
        Client(client_id=client_id, certificates_pem=(certificate_pem(registered),))
    )
    pem_file = tmp_path / "gateway.pem"
    pem_file.write_text(private_key_pem(used) + certificate_pem(used))
    running = await launch(
        client_id=client_id, client_secret=None, client_certificate_file=pem_file
    )
    response = await running.browser.sign_in("/")
    assert response.status == 502
    assert "invalid_client" in await response.text()
    assert "GATEWAY_CLIENT_CERTIFICATE_FILE" in caplog.text


async def test_federated_token_file_is_read_at_each_use(
    launch: Launch, idp: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    issuer_key = rsa_key()
    public_pem = (
        issuer_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    client_id = str(uuid.uuid4())
    idp.register_client(
        Client(
            client_id=client_id,
            federated_credentials=(
                FederatedCredential(FEDERATION_ISSUER, FEDERATION_SUBJECT, public_pem),
            ),
        )
    )
    token_file = tmp_path / "azure-identity-token"

    def project_token(lifetime: int) -> str:
        now = int(time.time())
        token = jwt.encode(
            {
                "iss": FEDERATION_ISSUER,
                "sub": FEDERATION_SUBJECT,
                "aud": "api://AzureADTokenExchange",
                "iat": now,
                "nbf": now,
                "exp": now + lifetime,
                "jti": str(uuid.uuid4()),
            },
            issuer_key,
            algorithm="RS256",
        )
        token_file.write_text(token)
        return token

    first = project_token(3600)
    running = await launch(
        client_id=client_id,
        client_secret=None,
        federated_token_file=token_file,
        scopes="api://upstream/read",
    )
    await signed_in(running)
    second = project_token(3600)  # Kubernetes rotated the projected token
    refreshed = await running.browser.session.post(running.url + "/.auth/refresh", headers=API)
    await refreshed.read()
    assert refreshed.status == 200
    assertions = [r.form["client_assertion"] for r in idp.token_requests()]
    assert assertions == [first, second]

    project_token(-600)  # an expired projected token
    refused = await running.browser.session.post(running.url + "/.auth/refresh", headers=API)
    body = await refused.json()
    assert refused.status == 502
    assert "invalid_client" in body["message"]
    assert "GATEWAY_FEDERATED_TOKEN_FILE" in caplog.text


async def test_verify_answers_forward_auth(launch: Launch) -> None:
    running = await launch(scopes="api://upstream/read")
    anonymous = await running.browser.get("/.auth/verify", headers=API)
    assert anonymous.status == 401
    await signed_in(running)
    allowed = await running.browser.get("/.auth/verify", headers=API)
    assert allowed.status == 200
    assert allowed.headers["X-MS-CLIENT-PRINCIPAL-NAME"] == "alice@contoso.example"
    assert "X-MS-CLIENT-PRINCIPAL" in allowed.headers
    # The endpoint is reachable from the browser: no bearer token unless switched on.
    assert "Authorization" not in allowed.headers


async def test_verify_carries_the_bearer_token_when_enabled(launch: Launch) -> None:
    running = await launch(scopes="api://upstream/read", tokens={"expose_in_verify": True})
    await signed_in(running)
    allowed = await running.browser.get("/.auth/verify", headers=API)
    assert allowed.headers["Authorization"].startswith("Bearer ")
