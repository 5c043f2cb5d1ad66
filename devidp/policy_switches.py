"""The control operations for directory policies: groups overage, consent, step-up for refresh.

A base of `control.DevIdpControl`, kept apart so each module stays small; the state and the
errors these policies produce are in `policies.py`. `control_http.py` exposes the operations.
"""

from __future__ import annotations

from .state import DevIdpState


class PolicyControl:
    _state: DevIdpState

    @property
    def groups_overage_limit(self) -> int:
        return self._state.policies.groups_overage_limit

    def set_groups_overage_limit(self, limit: int | None) -> None:
        """Users with more than `limit` groups get `_claim_names`/`_claim_sources` instead of a
        `groups` claim in id and access tokens. None restores `DevIdpConfig.groups_overage_limit`
        (default 200, as Entra)."""
        self._state.policies.set_groups_overage_limit(limit)

    def require_consent(self, resource: str) -> None:
        """From now on a refresh-token or authorization-code grant for a scope on `resource`
        (e.g. `api://reports`) fails with invalid_grant AADSTS65001, suberror consent_required,
        unless the user consented: completed an authorize request for this client whose
        `scope` named the resource (or `grant_consent`)."""
        self._state.policies.require_consent(resource)

    def grant_consent(self, user: str, resource: str, *, client_id: str | None = None) -> None:
        """Record `user`'s consent to `resource` for `client_id` (default: the first client), as
        completing an authorize request would."""
        found = self._state.find_user(user)
        if found is None:
            raise KeyError(f"no test user {user!r}")
        client = client_id or self._state.config.clients[0].client_id
        self._state.policies.record_consent(found.oid, client, (resource,))

    @property
    def refresh_acrs(self) -> str | None:
        return self._state.policies.refresh_acrs

    def require_claims_for_refresh(self, acrs: str | None) -> None:
        """Conditional Access step-up: while set, a refresh-token grant fails with invalid_grant
        AADSTS50076 and a `claims` challenge `{"access_token":{"acrs":{"essential":true,
        "value":acrs}}}`, unless its refresh token comes from an authorization-code sign-in
        whose claims asked for `acrs` (at authorize or at the token request). Such a sign-in
        succeeds and its access token carries `"acrs": [acrs]`. None turns the policy off."""
        self._state.policies.require_claims_for_refresh(acrs)
