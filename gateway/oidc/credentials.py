"""How the gateway reaches and authenticates to the identity provider: the HTTP session MSAL uses
(trusted CA, timeouts, no environment overrides) and the client credential it presents (a secret,
a certificate, or a federated token re-read at each use). No network I/O here."""

from __future__ import annotations

import functools
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from gateway.config.settings import Settings


def http_session(settings: Settings) -> requests.Session:
    session = requests.Session()
    # Env vars such as REQUESTS_CA_BUNDLE would silently replace `verify` (ENTRA.md c.1).
    session.trust_env = False
    session.verify = str(settings.ca_bundle) if settings.ca_bundle else True
    # One kept-alive connection per thread that may call at once (token refreshes and sign-in
    # steps): with fewer, urllib3 discards the surplus after each call, and a sign-in storm pays a
    # TLS handshake to the identity provider for most code redemptions.
    threads = settings.msal.worker_threads + settings.signin.max_concurrent
    session.mount("https://", HTTPAdapter(max_retries=1, pool_maxsize=threads))
    timeout = (settings.msal.connect_timeout_seconds, settings.msal.read_timeout_seconds)
    # MSAL passes no timeout of its own to a custom http_client (ENTRA.md c.7).
    session.request = functools.partial(session.request, timeout=timeout)  # type: ignore[method-assign]
    return session


def client_credential(settings: Settings) -> str | dict[str, Any]:
    """MSAL's `client_credential` for the one credential the settings configure."""
    if settings.client_secret is not None:
        return settings.client_secret.get_secret_value()
    if settings.client_certificate_file is not None:
        pem = settings.client_certificate_file.read_text(encoding="utf-8")
        return {"private_key": pem, "public_certificate": pem}
    token_file = settings.federated_token_file
    assert token_file is not None  # settings guarantee exactly one credential

    def assertion() -> str:
        # Re-read at every use: Kubernetes rotates the projected token file.
        return token_file.read_text(encoding="utf-8").strip()

    return {"client_assertion": assertion}


def credential_setting(settings: Settings) -> str:
    """The variable an operator must fix when the provider rejects the credential."""
    if settings.client_secret is not None:
        if settings.client_secret_file:
            return "GATEWAY_CLIENT_SECRET_FILE"
        return "GATEWAY_CLIENT_SECRET"
    if settings.client_certificate_file is not None:
        return "GATEWAY_CLIENT_CERTIFICATE_FILE"
    return "GATEWAY_FEDERATED_TOKEN_FILE"
