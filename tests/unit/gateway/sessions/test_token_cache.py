"""What a session's MSAL token cache stores (gateway.sessions.token_cache.storable): MSAL's
serialization, compact and without the id and access tokens the session record keeps anyway;
everything MSAL acquires tokens silently with (accounts, refresh tokens, app metadata) is kept as it
was."""

from __future__ import annotations

import json
from typing import Any, Final

import pytest

from gateway.sessions.token_cache import storable

HOME: Final = "0b7e2c1d.5c3e5f0a"
MSAL_CACHE: Final[dict[str, Any]] = {
    "AccessToken": {f"{HOME}-at": {"credential_type": "AccessToken", "secret": "eyJ.at.sig"}},
    "Account": {f"{HOME}-acct": {"home_account_id": HOME, "username": "alice@contoso.example"}},
    "IdToken": {f"{HOME}-idt": {"credential_type": "IdToken", "secret": "eyJ.idt.sig"}},
    "RefreshToken": {f"{HOME}-rt": {"credential_type": "RefreshToken", "secret": "1.rt"}},
    "AppMetadata": {"appmetadata-x": {"client_id": "x", "environment": "login"}},
}


UNSTORED: Final = ("IdToken", "AccessToken")


def test_id_and_access_tokens_and_indentation_are_dropped_and_nothing_else() -> None:
    serialized = json.dumps(MSAL_CACHE, indent=4)  # as MSAL serializes
    kept = storable(serialized)
    assert json.loads(kept) == {k: v for k, v in MSAL_CACHE.items() if k not in UNSTORED}
    assert "\n" not in kept
    assert len(kept) < len(serialized) / 2


def test_a_cache_without_id_or_access_tokens_keeps_its_content() -> None:
    without = {k: v for k, v in MSAL_CACHE.items() if k not in UNSTORED}
    assert json.loads(storable(json.dumps(without, indent=4))) == without
    assert storable(storable(json.dumps(MSAL_CACHE))) == storable(json.dumps(MSAL_CACHE))


@pytest.mark.parametrize("serialized", ["", "not json", "[1, 2]", '"IdToken"'])
def test_what_is_not_an_msal_cache_is_stored_as_given(serialized: str) -> None:
    # Reading it back refuses it (TokenCacheStore._read) rather than MSAL failing on it.
    assert storable(serialized) == serialized
