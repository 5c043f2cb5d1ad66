"""The OIDC `claims` request parameter: what a client asks to find in its access token.

msal sends one JSON object that merges its client capabilities (`client_capabilities=["CP1"]`
becomes `{"access_token": {"xms_cc": {"values": ["CP1"]}}}`) with a resource's claims challenge
(for example an authentication context, `{"access_token": {"acrs": {"essential": true,
"value": "c1"}}}`). Only those two requests change what the emulator issues; anything else in
the object is accepted and ignored, as Entra ignores claims it does not know.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from .errors import INVALID_REQUEST, OAuthError

INVALID_CLAIMS: Final = 90015


@dataclass(frozen=True, slots=True)
class ClaimsRequest:
    """`capabilities`: `access_token.xms_cc.values`; `acrs`: the authentication context class
    references asked for with `access_token.acrs` (`value` or `values`). `mentions_auth_time`:
    the request names `auth_time` anywhere, which makes the id token carry it."""

    capabilities: tuple[str, ...] = ()
    acrs: tuple[str, ...] = ()
    mentions_auth_time: bool = False

    @classmethod
    def parse(cls, raw: str | None) -> ClaimsRequest:
        """Parse the parameter; None or "" is an empty request. Raises OAuthError when it is
        not a JSON object."""
        if not raw:
            return cls()
        try:
            document = json.loads(raw)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise OAuthError(
                INVALID_REQUEST, INVALID_CLAIMS, "The claims parameter is not valid JSON."
            )
        access = document.get("access_token")
        access = access if isinstance(access, dict) else {}
        return cls(
            capabilities=_values(access.get("xms_cc")),
            acrs=_values(access.get("acrs")),
            mentions_auth_time="auth_time" in raw,
        )

    def merged(self, other: ClaimsRequest) -> ClaimsRequest:
        """Both requests at once (the authorize request's and the token request's)."""
        return ClaimsRequest(
            capabilities=_union(self.capabilities, other.capabilities),
            acrs=_union(self.acrs, other.acrs),
            mentions_auth_time=self.mentions_auth_time or other.mentions_auth_time,
        )

    def access_token_claims(self) -> dict[str, object]:
        """What the request adds to an access token: `xms_cc` and `acrs`, as lists."""
        added: dict[str, object] = {}
        if self.capabilities:
            added["xms_cc"] = list(self.capabilities)
        if self.acrs:
            added["acrs"] = list(self.acrs)
        return added


def _values(request: object) -> tuple[str, ...]:
    """The strings of an individual claim request: `{"value": v}` or `{"values": [...]}`
    (OpenID Connect Core 5.5.1)."""
    if not isinstance(request, dict):
        return ()
    found: list[object] = []
    if "value" in request:
        found.append(request["value"])
    values = request.get("values")
    if isinstance(values, list):
        found.extend(values)
    return tuple(dict.fromkeys(v for v in found if isinstance(v, str)))


def _union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*first, *second)))


def acrs_challenge(acrs: str) -> str:
    """The claims challenge asking for authentication context `acrs`, as Entra words it."""
    request = {"access_token": {"acrs": {"essential": True, "value": acrs}}}
    return json.dumps(request, separators=(",", ":"))
