"""Directory policies tests switch on: the groups overage limit, per-resource consent and step-up.

Thread-safe state plus the Entra errors these policies produce. Consent is remembered per user,
client and resource, and given by an authorize request whose `scope` names the resource, as on
Entra's consent prompt. Step-up is an authentication context (`acrs`) that refreshes need and
only an interactive sign-in that asked for it satisfies. `reset()` returns to the configuration.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from .claims import acrs_challenge
from .config import Client
from .errors import INVALID_GRANT, OAuthError
from .scopes import canonical_resource

Consent = tuple[str, str, str]  # (user oid, client id, canonical resource)


class Policies:
    def __init__(self, groups_overage_limit: int) -> None:
        self._lock = threading.Lock()
        self._configured_limit = groups_overage_limit
        self._overage_limit = groups_overage_limit
        self._consent_required: set[str] = set()
        self._consents: set[Consent] = set()
        self._refresh_acrs: str | None = None

    def reset(self) -> None:
        with self._lock:
            self._overage_limit = self._configured_limit
            self._consent_required.clear()
            self._consents.clear()
            self._refresh_acrs = None

    # groups overage

    @property
    def groups_overage_limit(self) -> int:
        with self._lock:
            return self._overage_limit

    def set_groups_overage_limit(self, limit: int | None) -> None:
        """None restores the configured limit."""
        if limit is not None and limit < 0:
            raise ValueError("the groups overage limit must not be negative")
        with self._lock:
            self._overage_limit = self._configured_limit if limit is None else limit

    # consent

    def require_consent(self, resource: str) -> None:
        if not resource.strip():
            raise ValueError("resource must not be empty")
        with self._lock:
            self._consent_required.add(canonical_resource(resource.strip()))

    def record_consent(self, oid: str, client_id: str, resources: Iterable[str]) -> None:
        with self._lock:
            self._consents.update((oid, client_id, canonical_resource(r)) for r in resources)

    def check_consent(self, oid: str, client: Client, resource: str | None) -> None:
        """Raise AADSTS65001 (suberror consent_required) when `resource` needs consent that
        this user has not given this client. Sign-in alone (no resource) never does."""
        if resource is None:
            return
        wanted = canonical_resource(resource)
        with self._lock:
            refused = (
                wanted in self._consent_required
                and (oid, client.client_id, wanted) not in self._consents
            )
        if refused:
            raise OAuthError(
                INVALID_GRANT,
                65001,
                "The user or administrator has not consented to use the application with ID "
                f"'{client.client_id}' named '{client.display_name}'. Send an interactive "
                "authorization request for this user and resource.",
                suberror="consent_required",
            )

    # step-up for refresh

    @property
    def refresh_acrs(self) -> str | None:
        with self._lock:
            return self._refresh_acrs

    def require_claims_for_refresh(self, acrs: str | None) -> None:
        if acrs is not None and not acrs.strip():
            raise ValueError("acrs must be a non-empty string or None")
        with self._lock:
            self._refresh_acrs = acrs

    def check_refresh(self, satisfied_acrs: Iterable[str], resource: str | None) -> None:
        """Raise AADSTS50076 (with the claims challenge to sign in with) unless the sign-in
        behind the refresh token satisfied the required authentication context."""
        required = self.refresh_acrs
        if required is None or required in satisfied_acrs:
            return
        raise OAuthError(
            INVALID_GRANT,
            50076,
            "Due to a configuration change made by your administrator, or because you moved to "
            "a new location, you must use multi-factor authentication to access "
            f"'{resource or 'the resource'}'. Interaction is required (authentication context "
            f"'{required}').",
            claims=acrs_challenge(required),
        )

    def snapshot(self) -> dict[str, object]:
        """For the control API's state view."""
        with self._lock:
            return {
                "groups_overage_limit": self._overage_limit,
                "consent_required": sorted(self._consent_required),
                "consents": [list(c) for c in sorted(self._consents)],
                "refresh_acrs": self._refresh_acrs,
            }
