"""The Python control API: faults, lifetimes, revocation, keys, users, minted tokens, the log.

Every method is safe to call from any thread while the emulator serves on its own event loop
(the state it touches is lock-protected). `control_http.py` exposes the same operations as JSON
under `/_devidp/`. The package docstring lists them all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from .config import Client, User
from .faults import (
    DEFAULT_DENIAL,
    AuthorizeError,
    Delay,
    ForcedResponse,
    TokenFaults,
    check_endpoint,
    check_remaining,
)
from .jwts import access_token_claims, id_token_claims, sign
from .policy_switches import PolicyControl
from .requestlog import LoggedRequest
from .scopes import parse_scopes
from .state import DevIdpState, Lifetimes


def _override(claims: dict[str, object], changes: Mapping[str, object] | None) -> None:
    for name, value in (changes or {}).items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value


class DevIdpControl(PolicyControl):
    """Drive a running emulator. Faults and settings stay until changed or `reset()`.

    The directory-policy operations (groups overage, consent, step-up) come from
    `PolicyControl`.
    """

    def __init__(self, state: DevIdpState) -> None:
        self._state = state

    @property
    def tenant_id(self) -> str:
        return self._state.config.tenant_id

    @property
    def users(self) -> tuple[User, ...]:
        return self._state.users()

    @property
    def clients(self) -> tuple[Client, ...]:
        return self._state.clients()

    def user(self, selector: str) -> User:
        """The user with this username, oid or preferred_username; KeyError if none."""
        found = self._state.find_user(selector)
        if found is None:
            raise KeyError(f"no test user {selector!r}")
        return found

    def reset(self) -> None:
        """Clear faults, grants, revocations, consents and the log; restore lifetimes, users,
        clients, keys and the policies (overage limit, consent and step-up requirements)."""
        self._state.reset()

    def clear_faults(self) -> None:
        self._state.clear_faults()

    def fail(
        self,
        endpoint: str,
        status: int,
        body: str | Mapping[str, object] | None = None,
        *,
        times: int | None = 1,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next `times` requests to `endpoint` with this status and body (a non-str
        body is JSON). `times=None` keeps failing until cleared. Endpoints: discovery,
        authorize, token, jwks, logout, userinfo, graph."""
        response = ForcedResponse(
            status, body, content_type, dict(headers or {}), check_remaining(times)
        )
        self._state.force(check_endpoint(endpoint), response)

    def delay(self, endpoint: str, seconds: float, *, times: int | None = None) -> None:
        """Hold requests to `endpoint` for `seconds` before answering them."""
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        self._state.delay(check_endpoint(endpoint), Delay(seconds, check_remaining(times)))

    def fail_authorize(
        self,
        error: str = "access_denied",
        description: str = DEFAULT_DENIAL,
        *,
        times: int | None = 1,
    ) -> None:
        """Send `error`/`error_description` to the redirect URI of the next authorize requests.
        The default description contains markup, to test that clients escape it."""
        self._state.set_authorize_error(AuthorizeError(error, description, check_remaining(times)))

    def set_token_faults(
        self,
        *,
        nonce: str | None = None,
        omit_id_token: bool = False,
        omit_client_info: bool = False,
        omit_refresh_token: bool = False,
        id_token_issuer: str | None = None,
        id_token_audience: str | None = None,
        id_token_expired: bool = False,
        id_token_unknown_key: bool = False,
        id_token_claims: Mapping[str, object] | None = None,
    ) -> None:
        """Replace the token-response faults (`faults.TokenFaults`); no arguments clears them."""
        if id_token_unknown_key:
            self._state.keys.rogue()  # create it now, not on the server's event loop
        self._state.set_token_faults(
            TokenFaults(
                nonce=nonce,
                omit_id_token=omit_id_token,
                omit_client_info=omit_client_info,
                omit_refresh_token=omit_refresh_token,
                id_token_issuer=id_token_issuer,
                id_token_audience=id_token_audience,
                id_token_expired=id_token_expired,
                id_token_unknown_key=id_token_unknown_key,
                id_token_claims=dict(id_token_claims or {}),
            )
        )

    def set_lifetimes(
        self,
        *,
        expires_in: int | None = None,
        ext_expires_in: int | None = None,
        refresh_in: int | None = None,
    ) -> None:
        """Set the token lifetimes; None means the configured `expires_in`, `ext_expires_in` equal
        to `expires_in`, and no `refresh_in`. msal never reuses a token with 300 s or less."""
        for value in (expires_in, ext_expires_in, refresh_in):
            if value is not None and value <= 0:
                raise ValueError("lifetimes must be positive")
        current = self._state.lifetimes
        self._state.set_lifetimes(
            Lifetimes(
                expires_in or self._state.config.expires_in,
                ext_expires_in,
                refresh_in,
                current.strict_rotation,
            )
        )

    def set_strict_rotation(self, on: bool = True) -> None:
        """With strict rotation a refresh token works exactly once (reuse: invalid_grant)."""
        current = self._state.lifetimes
        self._state.set_lifetimes(
            Lifetimes(current.expires_in, current.ext_expires_in, current.refresh_in, on)
        )

    @property
    def lifetimes(self) -> Lifetimes:
        return self._state.lifetimes

    def revoke_refresh_tokens(self, user: str) -> int:
        """Revoke the user's refresh tokens (AADSTS50173 on use); returns how many were live."""
        return self._state.grants.revoke_user(self.user(user).oid)

    def rotate_signing_key(self, *, keep_old: bool = True) -> str:
        """Sign with a new key (returned kid); the old one stays in JWKS when `keep_old`."""
        return self._state.keys.rotate(keep_old=keep_old).kid

    @property
    def signing_kid(self) -> str:
        return self._state.keys.current.kid

    def add_user(self, user: User) -> None:
        """Add a test user (or replace the one with the same username)."""
        self._state.add_user(user)

    def register_client(self, client: Client) -> None:
        """Register an app (or replace the one with the same client_id)."""
        self._state.register_client(client)

    def set_client_secrets(self, client_id: str, secrets: Sequence[str]) -> None:
        """Replace the secrets an app accepts, as rotating them in Entra does: a secret left
        out is revoked at once (client_secret becomes the first). KeyError for an unknown app."""
        client = self._state.client(client_id)
        if client is None:
            raise KeyError(f"no client {client_id!r}")
        self._state.register_client(
            dataclasses.replace(
                client,
                client_secret=secrets[0] if secrets else None,
                more_secrets=tuple(secrets[1:]),
            )
        )

    def issue_access_token(
        self,
        user: str | None = "alice",
        *,
        scope: str = "api://upstream/read",
        client_id: str | None = None,
        lifetime: int | None = None,
        claims: Mapping[str, object] | None = None,
        unknown_key: bool = False,
    ) -> str:
        """Mint an access token as the token endpoint would (`user=None`: an app token), then
        apply `claims` (a None value removes a claim). For bearer-token validation tests."""
        now = int(self._state.clock())
        token_claims = access_token_claims(
            None if user is None else self.user(user),
            client_id=client_id or self._state.config.clients[0].client_id,
            scopes=parse_scopes(scope),
            issuer=self._state.urls.issuer,
            tenant_id=self.tenant_id,
            now=now,
            lifetime=lifetime or self._state.lifetimes.expires_in,
            azpacr="1",
            groups_limit=self._state.policies.groups_overage_limit,
        )
        _override(token_claims, claims)
        keys = self._state.keys
        return sign(token_claims, keys.rogue() if unknown_key else keys.current)

    def issue_id_token(
        self,
        user: str = "alice",
        *,
        client_id: str | None = None,
        nonce: str | None = None,
        claims: Mapping[str, object] | None = None,
        unknown_key: bool = False,
    ) -> str:
        """Mint an id token as the token endpoint would, then apply `claims` overrides."""
        token_claims = id_token_claims(
            self.user(user),
            client_id=client_id or self._state.config.clients[0].client_id,
            issuer=self._state.urls.issuer,
            tenant_id=self.tenant_id,
            now=int(self._state.clock()),
            nonce=nonce,
            auth_time=None,
            groups_limit=self._state.policies.groups_overage_limit,
        )
        _override(token_claims, claims)
        keys = self._state.keys
        return sign(token_claims, keys.rogue() if unknown_key else keys.current)

    def requests(
        self, endpoint: str | None = None, *, grant_type: str | None = None
    ) -> list[LoggedRequest]:
        """Logged protocol requests, oldest first, optionally for one endpoint / grant type."""
        if endpoint is not None:
            check_endpoint(endpoint)
        return self._state.log.entries(endpoint, grant_type)

    def token_requests(self, grant_type: str | None = None) -> list[LoggedRequest]:
        return self._state.log.entries("token", grant_type)

    def clear_log(self) -> None:
        self._state.log.clear()
