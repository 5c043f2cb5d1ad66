"""What the identity provider publishes: its discovery document (issuer, JWKS address, end-session
endpoint, whether authorization responses name the issuer) and its signing keys, refetched on an
unknown key id at most once a minute (key rollover). Blocking HTTP: used only from MsalClient's
worker threads."""

from __future__ import annotations

import time
from typing import Any, Final

import jwt
import requests

from gateway.errors import IdentityProviderError
from gateway.tokens import id_tokens

KEYS_REFETCH_INTERVAL_SECONDS: Final = 60.0


def _get_json(http: requests.Session, url: str) -> dict[str, Any]:
    response = http.get(url)
    response.raise_for_status()
    document = response.json()
    if not isinstance(document, dict):
        raise ValueError(f"{url} did not return a JSON object")
    return document


class Provider:
    def __init__(self, http: requests.Session, document: dict[str, Any]) -> None:
        self._http = http
        self.issuer = str(document.get("issuer", ""))
        self.jwks_uri = str(document["jwks_uri"])
        end_session = document.get("end_session_endpoint")
        self.end_session_endpoint = str(end_session) if end_session else None
        # RFC 9207: every authorization response then names its issuer (mix-up defence).
        self.iss_parameter_supported = (
            document.get("authorization_response_iss_parameter_supported") is True
        )
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._refetched_at: float | None = None

    @classmethod
    def load(
        cls, http: requests.Session, discovery_url: str, *, exact_issuer: str | None
    ) -> Provider:
        """Fetch and check the discovery document and the keys. IdentityProviderError otherwise.

        With `exact_issuer`, the document's issuer must be exactly that: MSAL's own check of a
        generic provider accepts any issuer on the same host (DESIGN.md)."""
        try:
            document = _get_json(http, discovery_url)
        except (requests.RequestException, ValueError) as exc:
            raise IdentityProviderError(
                f"cannot load {discovery_url}: {type(exc).__name__}: {exc}"
            ) from exc
        if not document.get("jwks_uri"):
            raise IdentityProviderError(f"{discovery_url} names no jwks_uri")
        provider = cls(http, document)
        if exact_issuer is not None and provider.issuer.rstrip("/") != exact_issuer:
            raise IdentityProviderError(
                f"GATEWAY_OIDC_AUTHORITY is {exact_issuer} but the provider's discovery "
                f"document names issuer {provider.issuer!r}"
            )
        try:
            provider._fetch_keys()
        except (requests.RequestException, ValueError, jwt.PyJWTError) as exc:
            raise IdentityProviderError(f"cannot load the signing keys: {exc}") from exc
        return provider

    def _fetch_keys(self) -> None:
        keys = jwt.PyJWKSet.from_dict(_get_json(self._http, self.jwks_uri))
        self._keys = {key.key_id: key for key in keys.keys if key.key_id}
        self._fetched_at = time.monotonic()

    def cached_key(self, kid: str | None) -> jwt.PyJWK | None:
        """The published key `kid` as last fetched; no network."""
        return self._keys.get(kid) if kid else None

    def refetch_keys(self) -> None:
        """Fetch the keys again (key rollover), at most once a minute however many unknown key
        ids callers present."""
        now = time.monotonic()
        if self._refetched_at is None or now - self._refetched_at >= KEYS_REFETCH_INTERVAL_SECONDS:
            self._refetched_at = now
            try:
                self._fetch_keys()
            except (requests.RequestException, ValueError, jwt.PyJWTError) as exc:
                raise IdentityProviderError("cannot fetch the provider's signing keys") from exc

    def signing_key(self, kid: str | None) -> jwt.PyJWK:
        """The published key `kid`, or InvalidIdToken when the provider does not publish it."""
        if kid in self._keys:
            return self._keys[kid]
        if time.monotonic() - self._fetched_at >= KEYS_REFETCH_INTERVAL_SECONDS:
            try:
                self._fetch_keys()
            except (requests.RequestException, ValueError, jwt.PyJWTError) as exc:
                raise IdentityProviderError("cannot fetch the provider's signing keys") from exc
            if kid in self._keys:
                return self._keys[kid]
        raise id_tokens.InvalidIdToken("the id_token is signed with an unknown key")
