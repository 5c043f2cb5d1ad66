"""The identity assertion signer of gateway.tokens.assertion: tokens verified with PyJWT against the
published JWKS exactly as an upstream would, key periods and rotation, replicas, and the token
cache. Time is an injected clock; where PyJWT checks exp against the real time, the clock starts
at the real time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any, Final

import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.tokens.assertion import AssertionSigner

SECRET_A: Final = b"a" * 32
SECRET_B: Final = b"b" * 32
ISSUER: Final = "https://app.example.com"
AUDIENCE: Final = "http://127.0.0.1:8080"
LIFETIME: Final = 120
ROTATION: Final = 3600
SUBJECT: Final = "00000000-0000-0000-0000-0000000000aa.11111111-1111-1111-1111-111111111111"
CLAIMS: Final[dict[str, Any]] = {
    "oid": "00000000-0000-0000-0000-0000000000aa",
    "tid": "11111111-1111-1111-1111-111111111111",
    "name": "Ada Lovelace",
    "preferred_username": "ada@example.com",
    "groups": ["g1", "g2"],
}
P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    """Function scope: tests move it. Starts at the real time so PyJWT's exp check agrees."""
    return Clock(time.time())


def signer(clock: Clock, secret: bytes = SECRET_A, **overrides: Any) -> AssertionSigner:
    settings: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "lifetime_seconds": LIFETIME,
        "rotation_seconds": ROTATION,
        "clock": clock,
    } | overrides
    return AssertionSigner(secret, **settings)


def verify(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """What an upstream does: key by kid from the JWKS, ES256 only, exact iss and aud, exp."""
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=["ES256"],
        issuer=ISSUER,
        audience=AUDIENCE,
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"], "strict_aud": True},
    )
    return claims


def kids(jwks: dict[str, Any]) -> list[str]:
    return [key["kid"] for key in jwks["keys"]]


def b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def period_start(now: float) -> int:
    return int(now // ROTATION) * ROTATION


# ---- the token ----


def test_token_round_trips_with_exact_registered_claims(clock: Clock) -> None:
    s = signer(clock)
    claims = verify(s.sign(CLAIMS, subject=SUBJECT), s.jwks())
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE
    assert claims["sub"] == SUBJECT
    assert claims["iat"] == claims["nbf"] == int(clock.now)
    assert claims["exp"] == int(clock.now) + LIFETIME
    assert {k: claims[k] for k in CLAIMS} == CLAIMS


def test_header_names_es256_jwt_and_the_current_key(clock: Clock) -> None:
    s = signer(clock)
    header = jwt.get_unverified_header(s.sign(CLAIMS, subject=SUBJECT))
    assert header == {"alg": "ES256", "typ": "JWT", "kid": kids(s.jwks())[1]}


@pytest.mark.parametrize(
    ("issuer", "audience", "error"),
    [
        ("https://other.example.com", AUDIENCE, jwt.InvalidIssuerError),
        (ISSUER, "http://127.0.0.1:9090", jwt.InvalidAudienceError),
        (ISSUER + "/", AUDIENCE, jwt.InvalidIssuerError),
    ],
)
def test_other_issuer_or_audience_is_rejected(
    clock: Clock, issuer: str, audience: str, error: type[Exception]
) -> None:
    s = signer(clock, issuer=issuer, audience=audience)
    with pytest.raises(error):
        verify(s.sign(CLAIMS, subject=SUBJECT), s.jwks())


def test_token_is_rejected_after_its_lifetime(clock: Clock) -> None:
    clock.now -= LIFETIME + 1
    s = signer(clock)
    token = s.sign(CLAIMS, subject=SUBJECT)
    with pytest.raises(jwt.ExpiredSignatureError):
        verify(token, s.jwks())


def test_jti_is_unique_per_signature(clock: Clock) -> None:
    s = signer(clock)
    first = verify(s.sign(CLAIMS, subject=SUBJECT), s.jwks())
    second = verify(s.sign(CLAIMS, subject=SUBJECT + "x"), s.jwks())
    assert len(first["jti"]) >= 16
    assert first["jti"] != second["jti"]


def test_registered_claims_cannot_be_overridden(clock: Clock) -> None:
    s = signer(clock)
    hostile = CLAIMS | {
        "iss": "https://evil.example",
        "aud": "evil",
        "sub": "mallory",
        "iat": 1,
        "nbf": 1,
        "exp": 4_000_000_000,
        "jti": "fixed",
    }
    claims = verify(s.sign(hostile, subject=SUBJECT), s.jwks())
    assert (claims["iss"], claims["aud"], claims["sub"]) == (ISSUER, AUDIENCE, SUBJECT)
    assert claims["iat"] == claims["nbf"] == int(clock.now)
    assert claims["exp"] == int(clock.now) + LIFETIME
    assert claims["jti"] != "fixed"
    assert claims["name"] == CLAIMS["name"]


def test_non_ascii_claims_survive(clock: Clock) -> None:
    s = signer(clock)
    claims = CLAIMS | {"name": "Zoë Ångström 山田太郎 👩‍💻", "groups": ["Équipe ☃"]}
    verified = verify(s.sign(claims, subject=SUBJECT), s.jwks())
    assert verified["name"] == "Zoë Ångström 山田太郎 👩‍💻"
    assert verified["groups"] == ["Équipe ☃"]


def test_tampered_payload_fails_verification(clock: Clock) -> None:
    s = signer(clock)
    header, payload, signature = s.sign(CLAIMS, subject=SUBJECT).split(".")
    claims = json.loads(b64url_decode(payload))
    claims["sub"] = "mallory"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(jwt.InvalidSignatureError):
        verify(f"{header}.{forged}.{signature}", s.jwks())


def test_unserialisable_claims_raise_type_error(clock: Clock) -> None:
    with pytest.raises(TypeError):
        signer(clock).sign({"when": object()}, subject=SUBJECT)


# ---- keys, periods and rotation ----


def test_jwks_publishes_previous_current_and_next_public_keys_only(clock: Clock) -> None:
    jwks = signer(clock).jwks()
    assert len(jwks["keys"]) == 3
    assert len(set(kids(jwks))) == 3
    for key in jwks["keys"]:
        assert set(key) == {"kty", "crv", "x", "y", "use", "alg", "kid"}
        assert "d" not in key
        assert (key["kty"], key["crv"], key["use"], key["alg"]) == ("EC", "P-256", "sig", "ES256")
        assert len(b64url_decode(key["x"])) == len(b64url_decode(key["y"])) == 32


def test_kid_is_the_rfc7638_thumbprint(clock: Clock) -> None:
    for key in signer(clock).jwks()["keys"]:
        members = {name: key[name] for name in ("crv", "kty", "x", "y")}
        canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode()
        expected = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=")
        assert key["kid"] == expected.decode()


def test_key_derivation_follows_the_documented_recipe(clock: Clock) -> None:
    # Replicas on different releases must agree during a rolling upgrade: pin the recipe.
    period = int(clock.now // ROTATION)
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"msal-gateway/v1",
        info=f"identity-assertion/{period}".encode(),
    ).derive(SECRET_A)
    scalar = int.from_bytes(okm, "big") % (P256_ORDER - 1) + 1
    numbers = ec.derive_private_key(scalar, ec.SECP256R1()).public_key().public_numbers()
    current = signer(clock).jwks()["keys"][1]
    assert int.from_bytes(b64url_decode(current["x"]), "big") == numbers.x
    assert int.from_bytes(b64url_decode(current["y"]), "big") == numbers.y


def test_jwks_slides_by_one_key_per_period(clock: Clock) -> None:
    s = signer(clock)
    before = kids(s.jwks())
    clock.now += ROTATION
    after = kids(s.jwks())
    assert after[:2] == before[1:]
    assert after[2] not in before


def test_signing_key_changes_at_the_period_boundary(clock: Clock) -> None:
    clock.now = period_start(clock.now) + ROTATION - 1
    s = signer(clock)
    last_in_period = jwt.get_unverified_header(s.sign(CLAIMS, subject=SUBJECT))["kid"]
    clock.now += 1
    first_in_next = jwt.get_unverified_header(s.sign(CLAIMS, subject=SUBJECT + "2"))["kid"]
    assert last_in_period != first_in_next
    assert kids(s.jwks())[0] == last_in_period


def test_token_signed_before_a_rotation_verifies_with_the_jwks_after_it(clock: Clock) -> None:
    s = signer(clock)
    token = s.sign(CLAIMS, subject=SUBJECT)
    clock.now = period_start(clock.now) + ROTATION + 1
    assert verify(token, s.jwks())["sub"] == SUBJECT


def test_token_signed_after_a_rotation_verifies_with_a_jwks_cached_before_it(clock: Clock) -> None:
    s = signer(clock)
    token = s.sign(CLAIMS, subject=SUBJECT)
    clock.now = period_start(clock.now) - 1
    assert verify(token, s.jwks())["sub"] == SUBJECT


def test_key_is_retired_two_periods_later(clock: Clock) -> None:
    s = signer(clock)
    kid = jwt.get_unverified_header(s.sign(CLAIMS, subject=SUBJECT))["kid"]
    clock.now += 2 * ROTATION
    assert kid not in kids(s.jwks())


def test_replicas_with_the_same_secret_share_keys_and_tokens(clock: Clock) -> None:
    a, b = signer(clock), signer(clock)
    assert a.jwks() == b.jwks()
    assert verify(a.sign(CLAIMS, subject=SUBJECT), b.jwks())["sub"] == SUBJECT
    clock.now += ROTATION
    assert a.jwks() == b.jwks()


def test_another_secret_gives_other_keys_and_fails_verification(clock: Clock) -> None:
    ours, theirs = signer(clock), signer(clock, SECRET_B)
    assert set(kids(ours.jwks())).isdisjoint(kids(theirs.jwks()))
    token = theirs.sign(CLAIMS, subject=SUBJECT)
    with pytest.raises(KeyError):
        verify(token, ours.jwks())
    our_current = jwt.PyJWKSet.from_dict(ours.jwks()).keys[1]
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, our_current, algorithms=["ES256"], audience=AUDIENCE, issuer=ISSUER)


def test_jwks_is_a_copy(clock: Clock) -> None:
    s = signer(clock)
    s.jwks()["keys"][1]["kid"] = "changed"
    assert "changed" not in kids(s.jwks())


# ---- the token cache ----


def test_cache_returns_the_same_token_within_a_quarter_of_the_lifetime(clock: Clock) -> None:
    clock.now = float(int(clock.now))
    s = signer(clock)
    first = s.sign(CLAIMS, subject=SUBJECT)
    clock.now += LIFETIME / 4 - 0.5
    assert s.sign(dict(reversed(CLAIMS.items())), subject=SUBJECT) == first
    clock.now += 0.5
    renewed = s.sign(CLAIMS, subject=SUBJECT)
    assert renewed != first
    unverified = jwt.decode(renewed, options={"verify_signature": False})
    assert unverified["iat"] == int(clock.now)


def test_cache_separates_subjects_and_claims(clock: Clock) -> None:
    s = signer(clock)
    first = s.sign(CLAIMS, subject=SUBJECT)
    assert s.sign(CLAIMS, subject=SUBJECT + "x") != first
    assert s.sign(CLAIMS | {"groups": ["g1"]}, subject=SUBJECT) != first
    assert s.sign(CLAIMS, subject=SUBJECT) == first


def test_cache_resigns_when_the_clock_steps_back(clock: Clock) -> None:
    s = signer(clock)
    first = s.sign(CLAIMS, subject=SUBJECT)
    clock.now -= 60
    assert s.sign(CLAIMS, subject=SUBJECT) != first


def test_cache_drops_the_oldest_entry_when_full(clock: Clock) -> None:
    s = signer(clock, cache_size=2)
    oldest = s.sign(CLAIMS, subject="a")
    s.sign(CLAIMS, subject="b")
    newest = s.sign(CLAIMS, subject="c")
    assert s.sign(CLAIMS, subject="c") == newest
    assert s.sign(CLAIMS, subject="a") != oldest


# ---- construction ----


@pytest.mark.parametrize(
    ("secret", "overrides"),
    [
        (b"", {}),
        (SECRET_A, {"issuer": ""}),
        (SECRET_A, {"audience": ""}),
        (SECRET_A, {"lifetime_seconds": 0}),
        (SECRET_A, {"lifetime_seconds": ROTATION + 1}),
        (SECRET_A, {"cache_size": 0}),
    ],
)
def test_invalid_construction_is_refused(
    clock: Clock, secret: bytes, overrides: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        signer(clock, secret, **overrides)


def test_during_a_cookie_secret_rotation_every_replicas_tokens_verify(clock: Clock) -> None:
    """Replicas on either side of a promotion (docs/security.md): each signs with its current
    secret and publishes the other's keys too, so one JWKS verifies both replicas' tokens."""
    announced = signer(clock, SECRET_A, also_published=(SECRET_B,))  # S1 current, S2 next
    promoted = signer(clock, SECRET_B, also_published=(SECRET_A,))  # S2 current, S1 previous
    for jwks in (announced.jwks(), promoted.jwks()):
        assert len(jwks["keys"]) == 6
        for replica in (announced, promoted):
            assert verify(replica.sign(CLAIMS, subject=SUBJECT), jwks)["sub"] == SUBJECT
    # Once S1 is dropped its keys are no longer published.
    dropped = signer(clock, SECRET_B).jwks()
    with pytest.raises(KeyError):
        verify(announced.sign(CLAIMS, subject=SUBJECT), dropped)
