"""Malformed bearer input (THREATS.md A3: JW-17): the Authorization header's forms (the table in
data/bearer_cases.json), and random strings, tokens and headers, of which nothing but
InvalidBearer or MalformedAuthorization may come out."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.jwts import (
    AUDIENCE,
    LEEWAY,
    KeySpy,
    World,
    attacker_rsa,
    b64,
    hs256,
    jwk_of,
    raw_token,
    rs256,
)

from gateway.tokens.bearer import (
    BearerPolicy,
    InvalidBearer,
    MalformedAuthorization,
    bearer_from,
    validate,
)
from gateway.tokens.subject import user_key

pytestmark = pytest.mark.threat("JW-17")

HEADER_CASES_FILE: Final = Path(__file__).parent / "data" / "bearer_cases.json"


# ---- the Authorization header -------------------------------------------------------------------


def header_cases() -> list[Any]:
    document = json.loads(HEADER_CASES_FILE.read_text(encoding="utf-8"))
    return [pytest.param(case, id=case["id"]) for case in document["cases"]]


@pytest.mark.parametrize("case", header_cases())
def test_authorization_header(case: dict[str, Any]) -> None:
    if case["expect"] == "malformed":
        with pytest.raises(MalformedAuthorization):
            bearer_from(case["values"])
    elif case["expect"] == "none":
        assert bearer_from(case["values"]) is None
    else:
        assert case["expect"] == "token"
        assert bearer_from(case["values"]) == case["token"]


def test_header_cases_cover_the_listed_forms() -> None:
    forms = {tuple(case.values[0]["values"]) for case in header_cases()}
    assert ("Bearer ",) in forms
    assert ("bearer abc.def.ghi",) in forms
    assert any(len(values) == 2 for values in forms)


def test_header_to_claims_with_a_real_token(world: World) -> None:
    token = world.mint()
    found = bearer_from([f"Bearer {token}"])
    assert found == token
    assert validate(found, world.keys, world.policy())["scp"] == "read"
    for spelled in (f"bearer {token}", f"BEARER {token}", f"Bearer  {token}", f"Bearer {token} "):
        with pytest.raises(MalformedAuthorization):
            bearer_from([spelled])
    with pytest.raises(MalformedAuthorization):
        bearer_from([f"Bearer {token}", f"Bearer {token}"])


# ---- properties: nothing but InvalidBearer / MalformedAuthorization escapes ---------------------

PROPERTY_TID: Final = "0f0e0d0c-0b0a-4908-8706-050403020100"


PROPERTY_KID: Final = "property-key"


PROPERTY_POLICY: Final = BearerPolicy(
    ("https://issuer.example/{tenantid}/v2.0",),
    frozenset({AUDIENCE}),
    frozenset({PROPERTY_TID}),
    LEEWAY,
)


@functools.cache
def property_keys() -> KeySpy:
    jwk = jwk_of(attacker_rsa().public_key(), kid=PROPERTY_KID)
    return KeySpy({"keys": [jwk]})


def lookup(kid: str | None) -> jwt.PyJWK | None:
    return None if kid is None else property_keys().by_kid.get(kid)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


PLAUSIBLE = st.sampled_from(
    [
        AUDIENCE,
        PROPERTY_TID,
        "https://issuer.example/{tenantid}/v2.0",
        f"https://issuer.example/{PROPERTY_TID}/v2.0",
        "read",
        ["Reader"],
        [],
        "",
        0,
        -1,
        2**63,
        int(time.time()),
        int(time.time()) + 3600,
        True,
    ]
)


CLAIM_NAMES = st.sampled_from(
    [
        "iss",
        "aud",
        "tid",
        "oid",
        "sub",
        "exp",
        "iat",
        "nbf",
        "scp",
        "roles",
        "azp",
        "appid",
        "nonce",
        "email",
    ]
)


NOW: Final = int(time.time())


VALID_CLAIMS: Final = {
    "iss": f"https://issuer.example/{PROPERTY_TID}/v2.0",
    "aud": AUDIENCE,
    "tid": PROPERTY_TID,
    "oid": "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d",
    "sub": "s",
    "exp": NOW + 3600,
    "iat": NOW,
    "azp": "c",
    "scp": "read",
}


VALID_HEADER: Final = {"alg": "RS256", "typ": "JWT", "kid": PROPERTY_KID}


def varied(
    base: Mapping[str, Any], names: st.SearchStrategy[str], most: int
) -> st.SearchStrategy[Any]:
    """`base` with up to `most` members replaced by random JSON and up to `most` removed: many
    examples get past parsing and the signature, to exercise the claim rules."""
    return st.builds(
        lambda changes, dropped: {k: v for k, v in {**base, **changes}.items() if k not in dropped},
        st.dictionaries(names, JSON_VALUES | PLAUSIBLE, max_size=most),
        st.sets(names, max_size=most),
    )


CLAIMS = varied(VALID_CLAIMS, CLAIM_NAMES, 3)


HEADERS = varied(VALID_HEADER, st.sampled_from(["alg", "typ", "kid", "crit", "jku", "b64"]), 1)


B64URL = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=40
)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(
    st.binary(max_size=300).map(lambda raw: raw.decode("latin-1"))
    | st.text(max_size=300)
    | st.lists(B64URL, min_size=3, max_size=3).map(".".join)
    | st.lists(st.binary(max_size=60).map(b64), min_size=3, max_size=3).map(".".join)
)
def test_random_strings_are_only_ever_invalid_bearer(token: str) -> None:
    with pytest.raises(InvalidBearer):
        validate(token, lookup, PROPERTY_POLICY)


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(HEADERS, CLAIMS, st.sampled_from([True, True, True, False]))
def test_random_structured_tokens_are_accepted_or_invalid_bearer(
    header: dict[str, Any], claims: dict[str, Any], signed: bool
) -> None:
    """Random headers and claims, validly signed by the trusted key or not: validate returns
    claims that meet the policy, or raises InvalidBearer; nothing else escapes."""
    token = raw_token(header, claims, rs256(attacker_rsa()) if signed else hs256(b"k"))
    try:
        verified = validate(token, lookup, PROPERTY_POLICY)
    except InvalidBearer:
        return
    assert verified["aud"] == AUDIENCE and verified["tid"] == PROPERTY_TID
    assert isinstance(user_key(verified), str)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(
    st.lists(
        st.binary(max_size=80).map(lambda raw: raw.decode("latin-1"))
        | st.text(max_size=80)
        | st.builds(
            lambda s, t: f"{s} {t}",
            st.sampled_from(["Bearer", "bearer", "Basic", "BEARER"]),
            st.text(max_size=40),
        ),
        max_size=3,
    )
)
def test_random_authorization_headers_give_a_token_none_or_400(values: list[str]) -> None:
    try:
        token = bearer_from(values)
    except MalformedAuthorization:
        return
    if token is not None:
        assert values == [f"Bearer {token}"]
        assert token.isascii() and " " not in token
    else:
        assert not values or values[0].split(" ")[0].lower() != "bearer"
