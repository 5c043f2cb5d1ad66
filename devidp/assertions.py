"""Client assertions (RFC 7523): certificate credentials and workload identity federation.

A certificate assertion (`iss` = `sub` = client_id) must be signed by a certificate registered
on the client, found by the `x5t#S256` or `x5t` header; `x5c` in the header is ignored because
keys come from the registration only. A federated assertion must match a registered
issuer/subject pair, be addressed to `api://AzureADTokenExchange` and verify with that
credential's key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .config import Client, FederatedCredential
from .errors import INVALID_CLIENT, OAuthError
from .signing_keys import b64url

ALGORITHMS: Final = ["RS256", "PS256", "ES256"]
REQUIRED: Final = ["exp", "iss", "sub", "aud"]


def _thumbprints(pem: str) -> tuple[str, str, x509.Certificate]:
    certificate = x509.load_pem_x509_certificate(pem.encode())
    der = certificate.public_bytes(serialization.Encoding.DER)
    sha1 = b64url(hashlib.sha1(der).digest())  # noqa: S324 - the x5t header is SHA-1 (RFC 7515 4.1.7)
    return b64url(hashlib.sha256(der).digest()), sha1, certificate


def _invalid(code: int, message: str) -> OAuthError:
    return OAuthError(INVALID_CLIENT, code, message)


def _certificate_for(client: Client, header: dict[str, object]) -> x509.Certificate:
    # msal pads x5t/x5t#S256 with "=" (ENTRA.md c.13); registered thumbprints are unpadded.
    s256 = str(header.get("x5t#S256") or "").rstrip("=")
    sha1 = str(header.get("x5t") or "").rstrip("=")
    for pem in client.certificates_pem:
        registered_s256, registered_sha1, certificate = _thumbprints(pem)
        if (s256 and s256 == registered_s256) or (sha1 and sha1 == registered_sha1):
            return certificate
    raise _invalid(
        700027,
        "The certificate with identifier used to sign the client assertion is not registered "
        f"on application '{client.client_id}'.",
    )


def _verify_certificate(client: Client, assertion: str, audiences: Sequence[str]) -> None:
    certificate = _certificate_for(client, jwt.get_unverified_header(assertion))
    try:
        claims = jwt.decode(
            assertion,
            certificate.public_key(),  # type: ignore[arg-type]  # an RSA or EC public key
            algorithms=ALGORITHMS,
            audience=list(audiences),
            issuer=client.client_id,
            options={"require": REQUIRED},
        )
    except jwt.PyJWTError as exc:
        raise _invalid(700027, f"Client assertion failed validation: {exc}.") from exc
    if claims.get("sub") != client.client_id:
        raise _invalid(700021, "Client assertion subject must be the client_id.")


def _federated(client: Client, issuer: object, subject: object) -> FederatedCredential:
    for credential in client.federated_credentials:
        if credential.issuer == issuer and credential.subject == subject:
            return credential
    raise _invalid(
        70021,
        "No matching federated identity record found for presented assertion. "
        f"Assertion Issuer: '{issuer}'. Assertion Subject: '{subject}'.",
    )


def _verify_federated(client: Client, assertion: str, claims: dict[str, object]) -> None:
    credential = _federated(client, claims.get("iss"), claims.get("sub"))
    key = serialization.load_pem_public_key(credential.public_key_pem.encode())
    try:
        jwt.decode(
            assertion,
            key,  # type: ignore[arg-type]  # an RSA or EC public key
            algorithms=ALGORITHMS,
            audience=credential.audience,
            issuer=credential.issuer,
            options={"require": REQUIRED},
        )
    except jwt.PyJWTError as exc:
        raise _invalid(700024, f"Client assertion failed validation: {exc}.") from exc


def verify_client_assertion(client: Client, assertion: str, audiences: Sequence[str]) -> None:
    """Return when `assertion` authenticates `client`; raise OAuthError(invalid_client) if not."""
    try:
        unverified: dict[str, object] = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise _invalid(50027, f"Invalid JWT token: {exc}.") from exc
    if unverified.get("iss") == client.client_id:
        _verify_certificate(client, assertion, audiences)
    else:
        _verify_federated(client, assertion, unverified)
