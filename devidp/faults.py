"""Fault descriptions the tests inject: forced responses, delays, authorize errors, bad tokens.

Values only; `state.DevIdpState` keeps the active ones and counts down their `remaining` uses
(`None` means "until cleared").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, get_args

Endpoint = Literal["discovery", "authorize", "token", "jwks", "logout", "userinfo", "graph"]
ENDPOINTS: Final[tuple[str, ...]] = get_args(Endpoint)

DEFAULT_DENIAL: Final = (
    'AADSTS65004: User declined to consent to access the app. <script>alert("devidp")</script>'
    " & <b>more</b>"
)


def check_endpoint(name: str) -> Endpoint:
    """`name` as an `Endpoint`, or ValueError listing the valid names."""
    if name not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {name!r}; expected one of {', '.join(ENDPOINTS)}")
    return name  # type: ignore[return-value]  # narrowed by the membership test above


def check_remaining(times: int | None) -> int | None:
    if times is not None and times < 1:
        raise ValueError("times must be at least 1 (or None for 'until cleared')")
    return times


@dataclass(frozen=True, slots=True)
class ForcedResponse:
    """Answer with this instead of running the endpoint. A non-str body is sent as JSON."""

    status: int
    body: str | Mapping[str, object] | None = None
    content_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    remaining: int | None = 1

    def payload(self) -> tuple[bytes, str]:
        if self.body is None:
            return b"", self.content_type or "text/plain"
        if isinstance(self.body, str):
            return self.body.encode(), self.content_type or "text/plain; charset=utf-8"
        return json.dumps(self.body).encode(), self.content_type or "application/json"


@dataclass(frozen=True, slots=True)
class Delay:
    seconds: float
    remaining: int | None = None


@dataclass(frozen=True, slots=True)
class AuthorizeError:
    """The authorize endpoint sends this error to the (validated) redirect URI."""

    error: str = "access_denied"
    description: str = DEFAULT_DENIAL
    remaining: int | None = 1


@dataclass(frozen=True, slots=True)
class TokenFaults:
    """Deviations applied to every token response until cleared.

    `nonce` replaces the id_token nonce. `id_token_claims` overrides id_token claims last; a value
    of None removes the claim. `id_token_expired` moves iat/nbf/exp two hours into the past.
    """

    nonce: str | None = None
    omit_id_token: bool = False
    omit_client_info: bool = False
    omit_refresh_token: bool = False
    id_token_issuer: str | None = None
    id_token_audience: str | None = None
    id_token_expired: bool = False
    id_token_unknown_key: bool = False
    id_token_claims: Mapping[str, object] = field(default_factory=dict)
