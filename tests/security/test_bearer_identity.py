"""Who a bearer token's caller is (THREATS.md A3: JW-15, nOAuth): the user key is the object and
tenant id, never the mutable email, and the email is passed on only from a trusted source."""

from __future__ import annotations

from typing import Any

import pytest
from support.jwts import OTHER_TENANT, TID, VICTIM_EMAIL, World, other_tenant_issuer

from gateway.tokens.bearer import identity_claims, validate
from gateway.tokens.subject import user_key

pytestmark = pytest.mark.threat("JW-15")

# ---- identity (JW-15) ---------------------------------------------------------------------------


def test_identity_is_oid_and_tid_never_the_email(world: World) -> None:
    claims = validate(world.mint(), world.keys, world.policy())
    # tokens/subject.py's rule, the same one a browser session of this user is stored under.
    assert user_key(claims) == f"{claims['oid']}.{world.tid}"
    renamed = validate(
        world.craft(email=VICTIM_EMAIL, preferred_username=VICTIM_EMAIL, upn=VICTIM_EMAIL),
        world.keys,
        world.policy(),
    )
    assert user_key(renamed) == user_key(claims)
    assert "victim" not in user_key(renamed)


def test_noauth_token_from_an_allowed_foreign_tenant_is_someone_else(world: World) -> None:
    """JW-15: even when the other tenant is allowed, its user claiming our user's email is a
    different identity, and the email is not forwarded (not verified, not the home tenant)."""
    victim = {**world.claims, "email": VICTIM_EMAIL}
    attacker = validate(
        world.craft(iss=other_tenant_issuer(world), tid=OTHER_TENANT, email=VICTIM_EMAIL),
        world.keys,
        world.policy("two-tenants"),
    )
    assert attacker["tid"] == OTHER_TENANT
    assert user_key(attacker) != user_key(victim)
    assert "email" not in identity_claims(attacker, home_tenant=world.tid)
    assert identity_claims(victim, home_tenant=world.tid)["email"] == VICTIM_EMAIL


@pytest.mark.parametrize(
    ("extra", "home_tenant", "email_kept"),
    [
        pytest.param({"xms_edov": True}, None, True, id="domain verified"),
        pytest.param({"xms_edov": "true"}, None, False, id="xms_edov as a string"),
        pytest.param({"xms_edov": False}, None, False, id="domain not verified"),
        pytest.param({}, None, False, id="nothing said"),
        pytest.param({}, "home", True, id="home tenant"),
        pytest.param({"tid": OTHER_TENANT}, "home", False, id="foreign tenant"),
    ],
)
def test_email_is_kept_only_from_a_trusted_source(
    extra: dict[str, Any], home_tenant: str | None, email_kept: bool
) -> None:
    claims = {"oid": TID, "tid": "home", "email": VICTIM_EMAIL, "scp": "read", **extra}
    kept = identity_claims(claims, home_tenant=home_tenant)
    assert ("email" in kept) is email_kept
    assert kept["oid"] == TID and kept["scp"] == "read"


def test_identity_claims_keep_only_the_identity_subset(world: World) -> None:
    claims = validate(world.craft(xms_cc=["cp1"], secret_claim="s"), world.keys, world.policy())
    kept = identity_claims(claims)
    assert {"oid", "tid", "sub", "iss", "azp", "scp", "name", "preferred_username"} <= kept.keys()
    assert not {"xms_cc", "secret_claim", "exp", "aud", "uti", "rh", "aio"} & kept.keys()


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        pytest.param(
            {"oid": TID, "tid": TID, "iss": "i", "sub": "s"}, f"{TID}.{TID}", id="oid.tid"
        ),
        pytest.param({"iss": "https://i", "sub": "s"}, "https://i|s", id="iss|sub"),
        pytest.param(
            {"oid": "a.b", "tid": "c", "iss": "https://i", "sub": "s"},
            "https://i|s",
            id="non-GUID oid",
        ),
        pytest.param(
            {"oid": TID, "iss": "https://i", "sub": "s", "email": "e"}, "https://i|s", id="no tid"
        ),
    ],
)
def test_user_key(claims: dict[str, Any], expected: str) -> None:
    assert user_key(claims) == expected


def test_user_key_refuses_claims_without_a_subject() -> None:
    with pytest.raises(ValueError, match="subject"):
        user_key({"email": VICTIM_EMAIL, "preferred_username": VICTIM_EMAIL})
