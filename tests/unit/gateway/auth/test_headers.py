"""Headers in gateway.auth.headers, the functional side: what CGI-style frameworks see (fold),
ordinary headers kept exactly as sent, the identity headers built from claims (DESIGN.md "Headers
sent upstream"), and the upstream's response headers filtered. What a client must never get
through (THREATS.md A4) is in tests/security/test_header_spoofing.py; the gateway's cookies are
in tests/security/test_cookies.py."""

from __future__ import annotations

from typing import Any, Final

import pytest
from support.headers import HOP_BY_HOP_NAMES, as_dict, clean, decode_principal

from gateway.auth.headers import fold, identity_headers, is_identity_header, response_headers


@pytest.mark.parametrize(
    ("name", "folded"),
    [
        ("X_Forwarded_User", "x-forwarded-user"),
        ("X.Forwarded.User", "x-forwarded-user"),
        ("x-ms-client_principal-name", "x-ms-client-principal-name"),
        ("AUTHORIZATION", "authorization"),
        ("Content-Type", "content-type"),
    ],
)
def test_fold_is_what_cgi_style_frameworks_see(name: str, folded: str) -> None:
    assert fold(name) == folded


def test_ordinary_headers_keep_their_order_case_and_repeats() -> None:
    items = [
        ("Accept", "text/html"),
        ("X-Multi", "a"),
        ("user-agent", "curl/8"),
        ("X-Multi", "b"),
        ("Content-Length", "3"),
    ]
    assert list(clean(items).items()) == items


# ---- identity headers from claims (DESIGN.md) ----

FULL_CLAIMS: Final[dict[str, Any]] = {
    "oid": "11111111-2222-3333-4444-555555555555",
    "sub": "subject-value",
    "tid": "tenant-id",
    "name": "Ada Lovelace",
    "preferred_username": "ada@contoso.com",
    "email": "ada@contoso.com",
    "groups": ["g1", "g2"],
    "roles": ["Reader", "Writer"],
}


def test_signed_in_user_gets_every_design_header() -> None:
    headers = as_dict(identity_headers(FULL_CLAIMS, email_trusted=True, access_token="at-123"))
    assert set(headers) == {
        "X-MS-CLIENT-PRINCIPAL",
        "X-MS-CLIENT-PRINCIPAL-NAME",
        "X-MS-CLIENT-PRINCIPAL-ID",
        "X-MS-CLIENT-PRINCIPAL-IDP",
        "X-Forwarded-User",
        "X-Forwarded-Preferred-Username",
        "X-Forwarded-Email",
        "X-Forwarded-Groups",
        "Authorization",
    }
    assert headers["X-MS-CLIENT-PRINCIPAL-NAME"] == "ada@contoso.com"
    assert headers["X-MS-CLIENT-PRINCIPAL-ID"] == FULL_CLAIMS["oid"]
    assert headers["X-MS-CLIENT-PRINCIPAL-IDP"] == "aad"
    assert headers["X-Forwarded-User"] == FULL_CLAIMS["oid"]
    assert headers["X-Forwarded-Preferred-Username"] == "ada@contoso.com"
    assert headers["X-Forwarded-Email"] == "ada@contoso.com"
    assert headers["X-Forwarded-Groups"] == "g1,g2"
    assert headers["Authorization"] == "Bearer at-123"


def test_every_emitted_header_is_an_identity_header_the_inbound_side_strips() -> None:
    for name, _ in identity_headers(FULL_CLAIMS, email_trusted=True, access_token="at"):
        assert is_identity_header(name), name


def test_principal_json_has_the_easy_auth_shape_with_list_claims_flattened() -> None:
    headers = as_dict(identity_headers(FULL_CLAIMS, email_trusted=True, access_token=None))
    principal = decode_principal(headers["X-MS-CLIENT-PRINCIPAL"])
    assert principal["auth_typ"] == "aad"
    assert principal["name_typ"] == "name"
    assert principal["role_typ"] == "roles"
    claims = principal["claims"]
    assert all(set(claim) == {"typ", "val"} for claim in claims)
    assert all(isinstance(claim["val"], str) for claim in claims)
    pairs = [(claim["typ"], claim["val"]) for claim in claims]
    assert ("roles", "Reader") in pairs
    assert ("roles", "Writer") in pairs
    assert ("groups", "g1") in pairs
    assert ("groups", "g2") in pairs
    assert ("name", "Ada Lovelace") in pairs
    assert ("oid", FULL_CLAIMS["oid"]) in pairs


@pytest.mark.parametrize(
    ("email_trusted", "present"), [(True, True), (False, False)], ids=["trusted", "untrusted"]
)
def test_email_header_only_when_the_email_claim_is_trusted(
    email_trusted: bool, present: bool
) -> None:
    headers = as_dict(identity_headers(FULL_CLAIMS, email_trusted=email_trusted, access_token=None))
    assert ("X-Forwarded-Email" in headers) is present
    # The principal still carries the claim for applications that read it knowingly.
    pairs = [
        (c["typ"], c["val"]) for c in decode_principal(headers["X-MS-CLIENT-PRINCIPAL"])["claims"]
    ]
    assert ("email", "ada@contoso.com") in pairs


@pytest.mark.parametrize(
    ("claims", "access_token", "absent"),
    [
        ({"oid": "o"}, None, {"X-MS-CLIENT-PRINCIPAL-NAME", "X-Forwarded-Preferred-Username"}),
        ({"oid": "o"}, None, {"X-Forwarded-Email", "X-Forwarded-Groups", "Authorization"}),
        ({"oid": "o", "groups": []}, None, {"X-Forwarded-Groups"}),
        ({"oid": "o", "email": None}, None, {"X-Forwarded-Email"}),
        ({"oid": "o"}, "", {"Authorization"}),
        ({"name": "no id at all"}, None, {"X-MS-CLIENT-PRINCIPAL-ID", "X-Forwarded-User"}),
    ],
)
def test_headers_whose_claim_is_absent_are_not_sent(
    claims: dict[str, Any], access_token: str | None, absent: set[str]
) -> None:
    headers = as_dict(identity_headers(claims, email_trusted=True, access_token=access_token))
    assert absent.isdisjoint(headers)
    assert headers["X-MS-CLIENT-PRINCIPAL-IDP"] == "aad"
    assert "X-MS-CLIENT-PRINCIPAL" in headers


@pytest.mark.parametrize(
    ("claims", "expected_id"),
    [
        ({"sub": "provider-sub"}, "provider-sub"),
        ({"oid": "entra-oid", "sub": "provider-sub"}, "entra-oid"),
        ({"oid": "", "sub": "provider-sub"}, "provider-sub"),
    ],
)
def test_principal_id_is_oid_and_falls_back_to_sub(
    claims: dict[str, Any], expected_id: str
) -> None:
    headers = as_dict(identity_headers(claims, email_trusted=False, access_token=None))
    assert headers["X-MS-CLIENT-PRINCIPAL-ID"] == expected_id
    assert headers["X-Forwarded-User"] == expected_id


# ---- response headers ----


def test_response_keeps_every_set_cookie_in_order() -> None:
    kept = response_headers(
        [
            ("Content-Type", "text/html"),
            ("Set-Cookie", "a=1; Path=/"),
            ("Set-Cookie", "b=2; Path=/; HttpOnly"),
            ("set-cookie", "c=3"),
        ]
    )
    assert kept.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly", "c=3"]
    assert kept["Content-Type"] == "text/html"


@pytest.mark.parametrize("name", HOP_BY_HOP_NAMES)
def test_response_hop_by_hop_headers_are_dropped(name: str) -> None:
    kept = response_headers([(name, "x"), ("Cache-Control", "no-store")])
    assert list(kept.items()) == [("Cache-Control", "no-store")]


@pytest.mark.parametrize(
    "connection", ["X-Internal", "close, x-internal", "X_Internal", "keep-alive,X.Internal"]
)
def test_response_headers_named_by_connection_are_dropped(connection: str) -> None:
    kept = response_headers(
        [("Connection", connection), ("X-Internal", "secret"), ("ETag", '"v1"')]
    )
    assert list(kept.items()) == [("ETag", '"v1"')]
