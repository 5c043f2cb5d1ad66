"""Client authentication at the token endpoint: client_secret (form or HTTP Basic) or an assertion.

Assertions (certificate and federated) are checked in `assertions.py`. A client registered
without any credential is public and authenticates with its client_id alone.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote_plus

from .assertions import verify_client_assertion
from .config import Client
from .errors import INVALID_CLIENT, INVALID_REQUEST, OAuthError, missing, unknown_client
from .state import DevIdpState

JWT_BEARER_ASSERTION: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(frozen=True, slots=True)
class AuthenticatedClient:
    """A client that proved who it is. `azpacr`: "0" public, "1" secret, "2" assertion."""

    client: Client
    azpacr: str


def _basic(authorization: str | None) -> tuple[str, str] | None:
    if not authorization or not authorization.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        client_id, secret = decoded.split(":", 1)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise OAuthError(INVALID_CLIENT, 7000215, "Malformed HTTP Basic credentials.") from exc
    # RFC 6749 2.3.1: both parts are form-urlencoded before they are joined.
    return unquote_plus(client_id), unquote_plus(secret)


def _bad_secret(client_id: str) -> OAuthError:
    return OAuthError(
        INVALID_CLIENT,
        7000215,
        "Invalid client secret provided. Ensure the secret being sent in the request is the "
        f"client secret value, not the client secret ID, for a secret added to app "
        f"'{client_id}'.",
    )


def authenticate_client(
    state: DevIdpState,
    form: Mapping[str, str],
    authorization: str | None,
    audiences: Sequence[str],
) -> AuthenticatedClient:
    """The authenticated client, or OAuthError (401 invalid_client for a bad credential).

    `audiences` are the token endpoint URLs a client assertion may be addressed to.
    """
    basic = _basic(authorization)
    client_id = form.get("client_id") or (basic[0] if basic else None)
    if not client_id:
        raise missing("client_id")
    if basic and basic[0] != client_id:
        raise OAuthError(INVALID_REQUEST, 900144, "client_id differs from the Basic username.")
    client = state.client(client_id)
    if client is None:
        raise unknown_client(client_id, state.config.tenant_id)
    secret = form.get("client_secret") or (basic[1] if basic else None)
    assertion_type, assertion = form.get("client_assertion_type"), form.get("client_assertion")
    if assertion_type or assertion:
        if assertion_type != JWT_BEARER_ASSERTION or not assertion:
            raise OAuthError(
                INVALID_REQUEST,
                50027,
                f"client_assertion_type must be '{JWT_BEARER_ASSERTION}' with a client_assertion.",
            )
        verify_client_assertion(client, assertion, audiences)
        return AuthenticatedClient(client, "2")
    if secret is not None:
        if not client.accepts_secret(secret):
            raise _bad_secret(client_id)
        return AuthenticatedClient(client, "1")
    if client.is_confidential:
        raise OAuthError(
            INVALID_CLIENT,
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or "
            "'client_secret'.",
        )
    return AuthenticatedClient(client, "0")
