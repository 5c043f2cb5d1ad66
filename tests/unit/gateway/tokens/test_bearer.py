"""BearerPolicy (gateway.tokens.bearer): an unsafe policy is refused when it is built, naming what
is wrong, and refusals map to RFC 6750's errors. The validation rules themselves are in
tests/security/test_bearer_tokens.py."""

from __future__ import annotations

from typing import Any, Final

import pytest
from support.jwts import AUDIENCE, ENTRA_HOST, ENTRA_V1, ENTRA_V2, TID

from gateway.errors import BadRequest, SignInRequired
from gateway.tokens.bearer import (
    MAX_LEEWAY_SECONDS,
    BearerPolicy,
    InvalidBearer,
    MalformedAuthorization,
    UnknownKey,
)


def test_errors_render_as_rfc_6750_asks() -> None:
    assert issubclass(UnknownKey, InvalidBearer)
    assert issubclass(InvalidBearer, SignInRequired)
    assert (InvalidBearer.status, InvalidBearer.code) == (401, "invalid_token")
    assert (UnknownKey.status, UnknownKey.code) == (401, "invalid_token")
    assert issubclass(MalformedAuthorization, BadRequest)
    assert (MalformedAuthorization.status, MalformedAuthorization.code) == (400, "invalid_request")


# ---- the policy ---------------------------------------------------------------------------------


GOOD: Final = BearerPolicy((ENTRA_V2,), frozenset({AUDIENCE}), frozenset({TID}), 60)


BAD_POLICIES = [
    pytest.param(
        {"allowed_tenants": frozenset()}, "allowed_tenants", id="template without allow-list"
    ),
    pytest.param(
        {"issuers": (ENTRA_V1, ENTRA_V2), "allowed_tenants": frozenset()},
        "allowed_tenants",
        id="two templates without allow-list",
    ),
    pytest.param({"issuers": ()}, "at least one issuer", id="no issuer"),
    pytest.param(
        {"issuers": ("http://login.microsoftonline.com/x/v2.0",)}, "https", id="http issuer"
    ),
    pytest.param(
        {"issuers": ("login.microsoftonline.com/x/v2.0",)}, "https", id="issuer without scheme"
    ),
    pytest.param({"issuers": ("https://x/{tenantid}/{tenantid}",)}, "once", id="template twice"),
    pytest.param({"issuers": ("https://x/{tid}/v2.0",)}, "once", id="other placeholder"),
    pytest.param({"issuers": ENTRA_V2}, "tuple", id="issuers as a string"),
    pytest.param({"audiences": frozenset()}, "audience", id="no audience"),
    pytest.param({"audiences": frozenset({""})}, "audience", id="empty audience"),
    pytest.param({"audiences": AUDIENCE}, "frozenset", id="audiences as a string"),
    pytest.param({"allowed_tenants": TID}, "frozenset", id="tenants as a string"),
    pytest.param(
        {"allowed_tenants": frozenset({"contoso.example"})}, "GUID", id="tenant domain name"
    ),
    pytest.param({"allowed_tenants": frozenset({TID.upper()})}, "GUID", id="tenant in upper case"),
    pytest.param({"allowed_tenants": frozenset({"common"})}, "GUID", id="tenant common"),
    pytest.param({"leeway_seconds": MAX_LEEWAY_SECONDS + 1}, "leeway", id="leeway over 5 minutes"),
    pytest.param({"leeway_seconds": -1}, "leeway", id="negative leeway"),
    pytest.param({"leeway_seconds": True}, "leeway", id="leeway bool"),
    pytest.param({"leeway_seconds": 1.5}, "leeway", id="leeway float"),
    pytest.param({"max_token_bytes": 0}, "max_token_bytes", id="no room for a token"),
]


@pytest.mark.parametrize(("change", "message"), BAD_POLICIES)
def test_unsafe_policy_is_refused_at_construction(change: dict[str, Any], message: str) -> None:
    fields = {
        "issuers": GOOD.issuers,
        "audiences": GOOD.audiences,
        "allowed_tenants": GOOD.allowed_tenants,
        "leeway_seconds": GOOD.leeway_seconds,
        **change,
    }
    with pytest.raises((ValueError, TypeError)) as caught:
        BearerPolicy(**fields)
    assert message in str(caught.value)


def test_safe_policies_are_accepted() -> None:
    assert GOOD.is_multi_tenant
    single = BearerPolicy((f"{ENTRA_HOST}/{TID}/v2.0",), frozenset({AUDIENCE}), frozenset(), 0)
    assert not single.is_multi_tenant
    assert BearerPolicy((ENTRA_V2,), frozenset({AUDIENCE}), frozenset({TID}), MAX_LEEWAY_SECONDS)
    assert GOOD.max_token_bytes == 16384
