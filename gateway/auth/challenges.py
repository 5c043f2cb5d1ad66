"""Claims challenges from the upstream (Continuous Access Evaluation, Conditional Access).

An API that wants a token with more claims answers 401 with
`WWW-Authenticate: Bearer error="insufficient_claims", claims="<base64 JSON>"`. This module reads
that header and says whether a request may be sent again. Pure functions.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Final

_PARAMETER: Final = re.compile(r'([A-Za-z_]+)\s*=\s*"([^"]*)"')
REPLAYABLE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_CLAIMS_LENGTH: Final = 4096


class ClaimsChallenge(Exception):
    """Control flow inside the hot path: the upstream asked for a token with these claims and
    the request can be sent again. Never rendered."""

    def __init__(self, claims: str) -> None:
        super().__init__("claims challenge")
        self.claims = claims


def claims_from(www_authenticate: Iterable[str]) -> str | None:
    """The claims JSON an `insufficient_claims` challenge asks for, or None (no such challenge,
    or one that is malformed)."""
    for value in www_authenticate:
        parameters = {name.lower(): text for name, text in _PARAMETER.findall(value)}
        if parameters.get("error") != "insufficient_claims" or "claims" not in parameters:
            continue
        encoded = parameters["claims"]
        if len(encoded) > MAX_CLAIMS_LENGTH:
            return None
        try:
            decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=False)
            document = json.loads(decoded)
        except (binascii.Error, ValueError):
            return None
        return json.dumps(document, separators=(",", ":")) if isinstance(document, dict) else None
    return None


def replayable(method: str, has_body: bool) -> bool:
    """Whether the request can be sent a second time without the client's help."""
    return method in REPLAYABLE_METHODS and not has_body


def challenge_inspector(
    method: str, has_body: bool, on_challenge: Callable[[str], Awaitable[None]]
) -> Callable[[int, Sequence[tuple[str, str]]], Awaitable[None]]:
    """What the proxy hands the transport to look at the upstream's answer before the client
    sees it: a 401 claims challenge raises ClaimsChallenge when the request can be sent again;
    otherwise `on_challenge` gets the claims (so that the client's retry finds a suitable token)
    and the 401 is passed through."""
    replay = replayable(method, has_body)

    async def inspect(status: int, headers: Sequence[tuple[str, str]]) -> None:
        if status != 401:
            return
        claims = claims_from(v for n, v in headers if n.lower() == "www-authenticate")
        if claims is None:
            return
        if replay:
            raise ClaimsChallenge(claims)
        await on_challenge(claims)

    return inspect
