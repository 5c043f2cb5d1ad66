"""Authorization codes and refresh tokens the emulator has issued, and their single-use rules.

Thread-safe: the server's event loop redeems grants while test threads revoke them. Codes are
burnt on the first redemption attempt, successful or not (RFC 6749 4.1.2: "MUST NOT be used more
than once"). Refresh tokens are reusable unless strict rotation is on, as with Entra.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

from .errors import INVALID_GRANT, OAuthError
from .scopes import Scopes


@dataclass(frozen=True, slots=True)
class CodeGrant:
    """What an authorization code stands for (ENTRA.md b.3)."""

    client_id: str
    redirect_uri: str
    scopes: Scopes
    nonce: str | None
    code_challenge: str | None
    user_oid: str
    auth_time: int
    include_auth_time: bool
    claims: str | None
    issued_at: float


@dataclass(frozen=True, slots=True)
class RefreshGrant:
    """What a refresh token stands for. `acrs`: the authentication contexts its sign-in
    satisfied (asked for in the interactive request), which later refreshes inherit."""

    client_id: str
    user_oid: str
    auth_time: int
    include_auth_time: bool
    issued_at: float
    acrs: tuple[str, ...] = ()
    used: bool = False
    revoked: bool = False


def _bad_refresh_token(detail: str) -> OAuthError:
    return OAuthError(INVALID_GRANT, 9002313, f"Invalid request. Invalid refresh token: {detail}.")


class Grants:
    def __init__(
        self, clock: Callable[[], float], *, code_lifetime: float, refresh_lifetime: float
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._code_lifetime = code_lifetime
        self._refresh_lifetime = refresh_lifetime
        self._codes: dict[str, CodeGrant] = {}
        self._burnt: dict[str, float] = {}  # code -> when it was issued
        self._refresh: dict[str, RefreshGrant] = {}

    def issue_code(self, grant: CodeGrant) -> str:
        code = "1." + secrets.token_urlsafe(48)
        with self._lock:
            self._prune_codes()
            self._codes[code] = grant
        return code

    def _prune_codes(self) -> None:
        """Forget expired codes: a replay of one then reads "not valid", still AADSTS70008."""
        horizon = self._clock() - self._code_lifetime
        for code in [c for c, g in self._codes.items() if g.issued_at < horizon]:
            del self._codes[code]
        for code in [c for c, issued in self._burnt.items() if issued < horizon]:
            del self._burnt[code]

    def redeem_code(self, code: str) -> CodeGrant:
        """The grant behind `code`, which can never be redeemed again. Raises AADSTS70008."""
        with self._lock:
            grant = self._codes.pop(code, None)
            reused = code in self._burnt
            if grant is not None:
                self._burnt[code] = grant.issued_at
        if grant is None:
            detail = "has already been redeemed" if reused else "is not valid"
            raise OAuthError(
                INVALID_GRANT,
                70008,
                f"The provided authorization code or refresh token has expired due to "
                f"inactivity. The code {detail}.",
            )
        if self._clock() - grant.issued_at > self._code_lifetime:
            raise OAuthError(INVALID_GRANT, 70008, "The provided authorization code has expired.")
        return grant

    def issue_refresh_token(self, grant: RefreshGrant) -> str:
        token = "1.devidp." + secrets.token_urlsafe(64)
        with self._lock:
            self._refresh[token] = grant
        return token

    def use_refresh_token(
        self,
        token: str,
        client_id: str,
        *,
        strict: bool,
        check: Callable[[RefreshGrant], None] | None = None,
    ) -> RefreshGrant:
        """Check and (under strict rotation) consume a refresh token. Raises invalid_grant.

        `check` runs last and may raise too (consent, step-up); a refused refresh leaves the
        token unconsumed, as Entra does.
        """
        with self._lock:
            grant = self._checked(self._refresh.get(token), client_id, strict=strict)
            if check is not None:
                check(grant)
            if strict:
                self._refresh[token] = replace(grant, used=True)
        return grant

    def _checked(self, grant: RefreshGrant | None, client_id: str, *, strict: bool) -> RefreshGrant:
        if grant is None:
            raise _bad_refresh_token("it was not issued by this identity provider")
        if grant.revoked:
            raise OAuthError(
                INVALID_GRANT,
                50173,
                "The provided grant has expired due to it being revoked, a fresh auth token is "
                "needed. The user might have changed or reset their password.",
            )
        if strict and grant.used:
            raise _bad_refresh_token("it was already redeemed and strict rotation is on")
        if grant.client_id != client_id:
            raise OAuthError(
                INVALID_GRANT, 70000, "The refresh token was issued to a different client."
            )
        if self._clock() - grant.issued_at > self._refresh_lifetime:
            raise OAuthError(
                INVALID_GRANT, 700082, "The refresh token has expired due to inactivity."
            )
        return grant

    def revoke_user(self, oid: str) -> int:
        """Revoke every refresh token of the user; returns how many were live."""
        with self._lock:
            live = [t for t, g in self._refresh.items() if g.user_oid == oid and not g.revoked]
            for token in live:
                self._refresh[token] = replace(self._refresh[token], revoked=True)
        return len(live)

    def reset(self) -> None:
        with self._lock:
            self._codes.clear()
            self._burnt.clear()
            self._refresh.clear()
