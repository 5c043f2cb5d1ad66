"""Bearer access tokens from API clients (THREATS.md A3: JW-01 to JW-17) against
gateway/tokens/bearer.py: one table of cases, each a token the development identity provider
minted or one crafted from it (support.jwts), the policy it meets, and what validation must say;
then signing-key rotation (F-11). Every case carries the catalogue row it checks."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

import jwt
import pytest
from support.jwts import (
    AUDIENCE,
    ENTRA_HOST,
    ENTRA_V2,
    LEEWAY,
    OTHER_TENANT,
    VICTIM_EMAIL,
    KeySpy,
    World,
    attacker_ec,
    attacker_rsa,
    b64,
    es256,
    fetch_keys,
    hs256,
    json_bytes,
    jwk_of,
    other_tenant_issuer,
    ps256,
    public_pem,
    raw_token,
    rs256,
    rs512,
    self_signed_der,
    toggle_unused_bit,
    weak_rsa,
)

from gateway.tokens.bearer import (
    BearerPolicy,
    InvalidBearer,
    UnknownKey,
    validate,
)
from gateway.tokens.subject import user_key

THREATS: Final = frozenset(f"JW-{n:02d}" for n in range(1, 18, 2))


# ---- the case table -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    threat: str
    token: Callable[[World], str]
    expect: type[InvalidBearer] | None = None  # None: accepted
    reason: str = ""  # a fragment of the refusal message
    early: bool = False  # refused before `keys` is asked
    policy: str = "default"
    keys: Callable[[World], KeySpy] | None = None
    now: Callable[[World], float] | None = None


def ok(id: str, threat: str, token: Callable[[World], str], **kw: Any) -> Case:
    return Case(id, threat, token, **kw)


def no(id: str, threat: str, token: Callable[[World], str], reason: str, **kw: Any) -> Case:
    return Case(id, threat, token, InvalidBearer, reason, **kw)


def early(id: str, threat: str, token: Callable[[World], str], reason: str, **kw: Any) -> Case:
    return Case(id, threat, token, InvalidBearer, reason, early=True, **kw)


def unknown(id: str, threat: str, token: Callable[[World], str], **kw: Any) -> Case:
    return Case(id, threat, token, UnknownKey, "unknown key", **kw)


def none_header(alg: Any) -> Callable[[World], str]:
    return lambda w: raw_token({"alg": alg, "typ": "JWT"}, w.claims, None)


def with_key(kid: str, jwk: Callable[[World], dict[str, Any]]) -> Callable[[World], KeySpy]:
    return lambda w: w.keys.plus(kid, jwk(w))


def entra_iss(w: World, tid: str | None = None) -> str:
    return f"{ENTRA_HOST}/{tid or w.tid}/v2.0"


def swap_payload(w: World, **changes: Any) -> str:
    header, _, signature = w.mint().split(".")
    return f"{header}.{b64(json_bytes({**w.claims, **changes}))}.{signature}"


def respelled_signature(w: World) -> str:
    signing_input, signature = w.mint().rsplit(".", 1)
    return f"{signing_input}.{toggle_unused_bit(signature)}"


def without_payload(w: World) -> str:
    header, _, signature = w.craft().split(".")
    return f"{header}..{signature}"


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


BASELINE = [
    ok("minted delegated token", "JW-13", lambda w: w.mint()),
    ok(
        "minted app token with an application role",
        "JW-13",
        lambda w: w.mint(None, scope=f"{AUDIENCE}/.default", claims={"roles": ["Reader"]}),
    ),
    ok(
        "minted token for the client id audience",
        "JW-13",
        lambda w: w.mint(scope=f"{w.idp.client_id}/read"),
    ),
    ok("crafted twin of the minted token", "JW-07", lambda w: w.craft()),
    ok("typ at+jwt", "JW-13", lambda w: w.craft({"typ": "at+jwt"})),
    ok("no typ", "JW-13", lambda w: w.craft({"typ": None})),
    ok("concrete issuer, no allow-list", "JW-09", lambda w: w.mint(), policy="single"),
    ok(
        "Entra v2 issuer under the template",
        "JW-11",
        lambda w: w.craft(iss=entra_iss(w)),
        policy="entra",
    ),
    ok(
        "Entra v1 token under the v1 template",
        "JW-11",
        lambda w: w.craft(
            iss=f"https://sts.windows.net/{w.tid}/", ver="1.0", azp=None, appid=w.idp.client_id
        ),
        policy="entra",
    ),
    ok(
        "key-supplying headers on a provider-signed token are ignored",
        "JW-05",
        lambda w: w.craft(
            {
                "jku": "https://attacker.example/keys",
                "x5u": "https://attacker.example/cert.pem",
                "jwk": jwk_of(attacker_rsa().public_key()),
                "x5c": [base64.b64encode(self_signed_der(attacker_rsa())).decode()],
            }
        ),
    ),
    ok(
        "exp at the leeway boundary",
        "JW-07",
        lambda w: w.craft(exp=w.now - LEEWAY, iat=w.now - 3600),
    ),
    ok("nbf at the leeway boundary", "JW-07", lambda w: w.craft(nbf=w.now + LEEWAY)),
    ok("iat at the leeway boundary", "JW-07", lambda w: w.craft(iat=w.now + LEEWAY, nbf=None)),
    ok("token exactly max_token_bytes long", "JW-17", lambda w: w.mint(), policy="exact"),
]

ALG_NONE = [
    early("alg none, empty signature", "JW-01", none_header("none"), "RS256"),
    early("alg None", "JW-01", none_header("None"), "RS256"),
    early("alg NONE", "JW-01", none_header("NONE"), "RS256"),
    early("alg nOnE", "JW-01", none_header("nOnE"), "RS256"),
    early("alg empty", "JW-01", none_header(""), "RS256"),
    early("alg null", "JW-01", none_header(None), "RS256"),
    early("alg list", "JW-01", none_header(["RS256"]), "RS256"),
    early("alg lowercase rs256", "JW-01", none_header("rs256"), "RS256"),
    early("no alg", "JW-01", lambda w: w.craft({"alg": None}), "RS256"),
    early(
        "alg none with the provider's signature kept",
        "JW-01",
        lambda w: b64(b'{"alg":"none","typ":"JWT"}') + "." + w.mint().split(".", 1)[1],
        "RS256",
    ),
]

ALG_CONFUSION = [
    early(
        "HS256 keyed with the provider's public key PEM",
        "JW-03",
        lambda w: w.craft({"alg": "HS256"}, hs256(public_pem(w.provider_key))),
        "RS256",
    ),
    no(
        "header says RS256, HMAC over the public key PEM",
        "JW-03",
        lambda w: w.craft(sign=hs256(public_pem(w.provider_key))),
        "signature",
    ),
    early(
        "ES256 by an attacker key",
        "JW-03",
        lambda w: w.craft({"alg": "ES256"}, es256(attacker_ec())),
        "RS256",
    ),
    early(
        "PS256 by the provider's own key",
        "JW-03",
        lambda w: w.craft({"alg": "PS256"}, ps256(w.provider_key)),
        "RS256",
    ),
    early(
        "RS512 by the provider's own key",
        "JW-03",
        lambda w: w.craft({"alg": "RS512"}, rs512(w.provider_key)),
        "RS256",
    ),
    no(
        "kid bound to an EC key",
        "JW-03",
        lambda w: w.craft({"kid": "ec-key"}, rs256(attacker_rsa())),
        "not an RS256 key",
        keys=with_key("ec-key", lambda w: jwk_of(attacker_ec().public_key())),
    ),
    no(
        "kid bound to an HMAC key made of the public key",
        "JW-03",
        lambda w: w.craft({"kid": "oct-key"}, hs256(public_pem(w.provider_key))),
        "not an RS256 key",
        keys=with_key("oct-key", lambda w: {"kty": "oct", "k": b64(public_pem(w.provider_key))}),
    ),
    no(
        "kid bound to an RSA key for PS256",
        "JW-03",
        lambda w: w.craft({"kid": "ps-key"}),
        "not an RS256 key",
        keys=with_key("ps-key", lambda w: jwk_of(w.provider_key.public_key(), alg="PS256")),
    ),
    no(
        "kid bound to a 1024-bit RSA key",
        "JW-03",
        lambda w: w.craft({"kid": "weak-key"}, rs256(weak_rsa())),
        "too weak",
        keys=with_key("weak-key", lambda w: jwk_of(weak_rsa().public_key())),
    ),
    no(
        "attacker signature under the provider's kid",
        "JW-03",
        lambda w: w.craft(sign=rs256(attacker_rsa())),
        "signature",
    ),
    no(
        "payload changed after signing",
        "JW-03",
        lambda w: swap_payload(w, scp="admin"),
        "signature",
    ),
    no(
        "signature of another token",
        "JW-03",
        lambda w: w.craft(scp="admin").rsplit(".", 1)[0] + "." + w.mint().rsplit(".", 1)[1],
        "signature",
    ),
]

KEY_SUPPLY = [
    unknown(
        "jku to an attacker JWKS, attacker kid",
        "JW-05",
        lambda w: w.craft(
            {"jku": "https://attacker.example/keys", "kid": "attacker"}, rs256(attacker_rsa())
        ),
    ),
    no(
        "jku to an attacker JWKS, provider kid",
        "JW-05",
        lambda w: w.craft({"jku": "https://attacker.example/keys"}, rs256(attacker_rsa())),
        "signature",
    ),
    unknown(
        "x5u to an attacker certificate, no kid",
        "JW-05",
        lambda w: w.craft(
            {"x5u": "https://attacker.example/cert.pem", "kid": None}, rs256(attacker_rsa())
        ),
    ),
    unknown(
        "embedded attacker jwk, no kid",
        "JW-05",
        lambda w: w.craft(
            {"jwk": jwk_of(attacker_rsa().public_key()), "kid": None}, rs256(attacker_rsa())
        ),
    ),
    no(
        "embedded attacker jwk, provider kid",
        "JW-05",
        lambda w: w.craft(
            {"jwk": jwk_of(attacker_rsa().public_key(), kid=w.kid)}, rs256(attacker_rsa())
        ),
        "signature",
    ),
    no(
        "embedded attacker x5c, provider kid",
        "JW-05",
        lambda w: w.craft(
            {"x5c": [base64.b64encode(self_signed_der(attacker_rsa())).decode()]},
            rs256(attacker_rsa()),
        ),
        "signature",
    ),
    unknown(
        "signed by a key the provider never published", "JW-05", lambda w: w.mint(unknown_key=True)
    ),
    unknown("no kid at all", "JW-05", lambda w: w.craft({"kid": None})),
    early("kid not a string", "JW-05", lambda w: w.craft({"kid": 7}), "key id"),
]

TIMES = [
    no("no exp", "JW-07", lambda w: w.craft(exp=None), "no exp claim"),
    no("no iat", "JW-07", lambda w: w.craft(iat=None), "no iat claim"),
    no(
        "exp leeway + 1 s ago",
        "JW-07",
        lambda w: w.craft(exp=w.now - LEEWAY - 1, iat=w.now - 3600),
        "expired",
    ),
    no("exp long ago", "JW-07", lambda w: w.craft(exp=1, iat=0, nbf=None), "expired"),
    no(
        "minted token after its lifetime",
        "JW-07",
        lambda w: w.mint(lifetime=120),
        "expired",
        now=lambda w: w.now + 120 + LEEWAY + 5,
    ),
    no("nbf in 10 minutes", "JW-07", lambda w: w.craft(nbf=w.now + 600), "not valid yet"),
    no(
        "nbf leeway + 1 s ahead",
        "JW-07",
        lambda w: w.craft(nbf=w.now + LEEWAY + 1),
        "not valid yet",
    ),
    no(
        "iat far in the future",
        "JW-07",
        lambda w: w.craft(iat=w.now + 10 * 365 * 86400, exp=w.now + 11 * 365 * 86400),
        "future",
    ),
    no(
        "iat leeway + 1 s ahead",
        "JW-07",
        lambda w: w.craft(iat=w.now + LEEWAY + 1, nbf=None),
        "future",
    ),
    no(
        "minted token seen by a clock that is behind",
        "JW-07",
        lambda w: w.mint(),
        "future",
        now=lambda w: w.now - LEEWAY - 5,
    ),
    no("exp as a string", "JW-07", lambda w: w.craft(exp=str(w.now + 3600)), "integer"),
    no("exp as a float", "JW-07", lambda w: w.craft(exp=w.now + 3600.5), "integer"),
    no("exp as true", "JW-07", lambda w: w.craft(exp=True), "integer"),
    no("iat as a list", "JW-07", lambda w: w.craft(iat=[w.now]), "integer"),
    no("nbf as a string", "JW-07", lambda w: w.craft(nbf="0"), "integer"),
    no(
        "exp equal to iat",
        "JW-07",
        lambda w: w.craft(exp=w.now, iat=w.now, nbf=None),
        "before it was issued",
    ),
    no(
        "exp before iat",
        "JW-07",
        lambda w: w.craft(exp=w.now + 10, iat=w.now + 20, nbf=None),
        "before it was issued",
    ),
]


def with_iss(make: Callable[[World], Any]) -> Callable[[World], str]:
    return lambda w: w.craft(iss=make(w))


def issuer_variants() -> list[Case]:
    variants: list[tuple[str, Callable[[World], Any]]] = [
        ("Entra host only", lambda w: f"{ENTRA_HOST}/"),
        ("the provider's host only", lambda w: f"{w.idp.base_url}/"),
        ("http instead of https", lambda w: w.idp.issuer.replace("https://", "http://", 1)),
        ("bare http", lambda w: "http"),
        ("extra path segment", lambda w: w.idp.issuer + "/extra"),
        ("trailing slash", lambda w: w.idp.issuer + "/"),
        ("one character short", lambda w: w.idp.issuer[:-1]),
        ("authority prefix", lambda w: w.idp.authority),
        ("authority with slash", lambda w: w.idp.authority + "/"),
        ("short prefix", lambda w: w.idp.issuer[:12]),
        ("expected issuer as a suffix", lambda w: "https://attacker.example/" + w.idp.issuer),
        ("expected issuer as a prefix", lambda w: w.idp.issuer + "evil"),
        ("query appended", lambda w: w.idp.issuer + "?x=1"),
        ("scheme in upper case", lambda w: w.idp.issuer.replace("https://", "HTTPS://", 1)),
        ("trailing space", lambda w: w.idp.issuer + " "),
        ("trailing NUL", lambda w: w.idp.issuer + "\x00"),
        (
            "tenant with two characters swapped",
            lambda w: w.idp.issuer.replace(w.tid, w.tid[1] + w.tid[0] + w.tid[2:]),
        ),
        ("tenant in upper case", lambda w: w.idp.issuer.replace(w.tid, w.tid.upper())),
        ("issuer in a list", lambda w: [w.idp.issuer]),
        ("issuer as an object", lambda w: {"iss": w.idp.issuer}),
        ("another tenant's issuer with our tid", other_tenant_issuer),
    ]
    cases = [
        no(f"iss {name}", "JW-09", with_iss(make), "unexpected issuer") for name, make in variants
    ]
    cases += [
        no(
            f"iss {name} (concrete issuer)",
            "JW-09",
            with_iss(make),
            "unexpected issuer",
            policy="single",
        )
        for name, make in variants[:8]
    ]
    entra: list[tuple[str, Callable[[World], str]]] = [
        ("Entra host only, Entra templates", lambda w: f"{ENTRA_HOST}/"),
        ("Entra over http", lambda w: entra_iss(w).replace("https://", "http://", 1)),
        ("Entra with an extra segment", lambda w: entra_iss(w) + "/extra"),
        ("Entra without v2.0", lambda w: f"{ENTRA_HOST}/{w.tid}"),
        ("Entra v2 without .0", lambda w: f"{ENTRA_HOST}/{w.tid}/v2"),
        (
            "Entra host as a subdomain",
            lambda w: entra_iss(w).replace(
                "microsoftonline.com", "microsoftonline.com.attacker.example"
            ),
        ),
        ("v1 without the trailing slash", lambda w: f"https://sts.windows.net/{w.tid}"),
    ]
    cases += [
        no(
            f"iss {name}",
            "JW-09",
            with_iss(make),
            "unexpected issuer",
            policy="entra",
        )
        for name, make in entra
    ]
    return cases


TEMPLATES = [
    no(
        "iss common",
        "JW-11",
        lambda w: w.craft(iss=f"{ENTRA_HOST}/common/v2.0"),
        "unexpected issuer",
        policy="entra",
    ),
    no(
        "iss organizations",
        "JW-11",
        lambda w: w.craft(iss=f"{ENTRA_HOST}/organizations/v2.0"),
        "unexpected issuer",
        policy="entra",
    ),
    no(
        "iss consumers",
        "JW-11",
        lambda w: w.craft(iss=f"{ENTRA_HOST}/consumers/v2.0"),
        "unexpected issuer",
        policy="entra",
    ),
    no(
        "iss is the literal template",
        "JW-11",
        lambda w: w.craft(iss=ENTRA_V2),
        "unexpected issuer",
        policy="entra",
    ),
    no(
        "tid common with the common issuer",
        "JW-11",
        lambda w: w.craft(iss=f"{ENTRA_HOST}/common/v2.0", tid="common"),
        "unexpected issuer",
        policy="entra",
    ),
    no(
        "tid is the literal placeholder",
        "JW-11",
        lambda w: w.craft(iss=ENTRA_V2, tid="{tenantid}"),
        "unexpected issuer",
        policy="entra",
    ),
    no(
        "tid is a path",
        "JW-11",
        lambda w: w.craft(iss=f"{ENTRA_HOST}/{w.tid}/v2.0/x/v2.0", tid=f"{w.tid}/v2.0/x"),
        "unexpected issuer",
        policy="entra",
    ),
    no(
        "no tid",
        "JW-11",
        lambda w: w.craft(iss=entra_iss(w), tid=None),
        "unexpected issuer",
        policy="entra",
    ),
    no(
        "tid in upper case",
        "JW-11",
        lambda w: w.craft(iss=entra_iss(w, w.tid.upper()), tid=w.tid.upper()),
        "unexpected issuer",
        policy="entra",
    ),
    no(
        "iss names another tenant than tid",
        "JW-11",
        lambda w: w.craft(iss=entra_iss(w, OTHER_TENANT)),
        "unexpected issuer",
        policy="entra",
    ),
    no(
        "another tenant, not in the allow-list",
        "JW-11",
        lambda w: w.craft(iss=entra_iss(w, OTHER_TENANT), tid=OTHER_TENANT),
        "tenant is not allowed",
        policy="entra",
    ),
    no(
        "v1 issuer when only v2 is configured",
        "JW-11",
        lambda w: w.craft(iss=f"https://sts.windows.net/{w.tid}/", ver="1.0"),
        "unexpected issuer",
        policy="entra-v2",
    ),
    no(
        "v2 issuer when only v1 is configured",
        "JW-11",
        lambda w: w.craft(iss=entra_iss(w)),
        "unexpected issuer",
        policy="entra-v1",
    ),
    no(
        "the provider's issuer under the Entra templates",
        "JW-11",
        lambda w: w.mint(),
        "unexpected issuer",
        policy="entra",
    ),
]

TOKEN_TYPES = [
    no(
        "id token (aud = client id)",
        "JW-13",
        lambda w: w.idp.issue_id_token("alice"),
        "no client application",
    ),
    no(
        "id token with a nonce",
        "JW-13",
        lambda w: w.idp.issue_id_token("alice", nonce="n-0S6_WzA2Mj"),
        "id token",
    ),
    no(
        "id token dressed with azp and scp",
        "JW-13",
        lambda w: w.idp.issue_id_token(
            "alice", nonce="n", claims={"azp": w.idp.client_id, "scp": "read"}
        ),
        "id token",
    ),
    no("access token with a nonce", "JW-13", lambda w: w.craft(nonce="abc"), "id token"),
    no("access token with at_hash", "JW-13", lambda w: w.craft(at_hash="x"), "id token"),
    no("access token with c_hash", "JW-13", lambda w: w.craft(c_hash="x"), "id token"),
    no("no azp or appid", "JW-13", lambda w: w.craft(azp=None), "no client application"),
    no("empty azp", "JW-13", lambda w: w.craft(azp=""), "no client application"),
    no("azp not a string", "JW-13", lambda w: w.craft(azp=["x"]), "no client application"),
    no(
        "no scp and no roles",
        "JW-13",
        lambda w: w.craft(scp=None, roles=None),
        "no scope or application role",
    ),
    no(
        "app token without roles",
        "JW-13",
        lambda w: w.mint(None, scope=f"{AUDIENCE}/.default"),
        "no scope or application role",
    ),
    no("empty scp", "JW-13", lambda w: w.craft(scp="", roles=None), "no scope"),
    no("blank scp", "JW-13", lambda w: w.craft(scp="   ", roles=None), "no scope"),
    no("scp as a list", "JW-13", lambda w: w.craft(scp=["read"]), "scp claim"),
    no("roles as a string", "JW-13", lambda w: w.craft(roles="Reader"), "roles claim"),
    no("roles with a number", "JW-13", lambda w: w.craft(roles=[1]), "roles claim"),
    no(
        "audience not configured",
        "JW-13",
        lambda w: w.mint(scope="api://other/read"),
        "another audience",
    ),
    no("Microsoft Graph token", "JW-13", lambda w: w.mint(scope="User.Read"), "another audience"),
    no(
        "audience with a trailing slash",
        "JW-13",
        lambda w: w.craft(aud=AUDIENCE + "/"),
        "another audience",
    ),
    no(
        "audience in upper case",
        "JW-13",
        lambda w: w.craft(aud=AUDIENCE.upper()),
        "another audience",
    ),
    no("audience as a list", "JW-13", lambda w: w.craft(aud=[AUDIENCE]), "single string"),
    no(
        "audience list with another",
        "JW-13",
        lambda w: w.craft(aud=[AUDIENCE, "api://other"]),
        "single string",
    ),
    no("no aud", "JW-13", lambda w: w.craft(aud=None), "no aud claim"),
    early("typ dpop+jwt", "JW-13", lambda w: w.craft({"typ": "dpop+jwt"}), "typ"),
    early("typ logout+jwt", "JW-13", lambda w: w.craft({"typ": "logout+jwt"}), "typ"),
    early("typ not a string", "JW-13", lambda w: w.craft({"typ": 1}), "typ"),
    no(
        "no subject",
        "JW-15",
        lambda w: w.craft(oid=None, sub=None),
        "no subject",
    ),
]

NOAUTH = [
    no(
        "another tenant's user claiming the victim's email",
        "JW-15",
        lambda w: w.craft(
            iss=other_tenant_issuer(w),
            tid=OTHER_TENANT,
            email=VICTIM_EMAIL,
            preferred_username=VICTIM_EMAIL,
            upn=VICTIM_EMAIL,
        ),
        "tenant is not allowed",
    ),
    no(
        "the same token under a concrete home issuer",
        "JW-15",
        lambda w: w.craft(iss=other_tenant_issuer(w), tid=OTHER_TENANT, email=VICTIM_EMAIL),
        "unexpected issuer",
        policy="single",
    ),
]


def malformed() -> list[Case]:
    header = b64(b'{"alg":"RS256","typ":"JWT"}')
    return [
        early("empty", "JW-17", lambda w: "", "three segments"),
        early("one segment", "JW-17", lambda w: "abc", "three segments"),
        early("two segments", "JW-17", lambda w: w.mint().rsplit(".", 1)[0], "three segments"),
        early("four segments", "JW-17", lambda w: w.mint() + ".c2ln", "three segments"),
        early(
            "five segments (JWE)",
            "JW-17",
            lambda w: ".".join([header, "a", "b", "c", "d"]),
            "three segments",
        ),
        early("two dots only", "JW-17", lambda w: "..", "base64url"),
        early("empty signature", "JW-17", lambda w: w.mint().rsplit(".", 1)[0] + ".", "signature"),
        early("empty payload", "JW-17", without_payload, "payload"),
        early(
            "non-base64url character",
            "JW-17",
            lambda w: w.mint().replace(".", ".!", 1),
            "base64url",
        ),
        early(
            "base64 '+' instead of '-'",
            "JW-17",
            lambda w: header.replace("J", "+", 1) + ".e30.c2ln",
            "base64url",
        ),
        early("padded signature", "JW-17", lambda w: w.mint() + "==", "base64url"),
        early(
            "impossible length", "JW-17", lambda w: "a." + w.mint().split(".", 1)[1], "base64url"
        ),
        early("non-canonical signature spelling", "JW-17", respelled_signature, "canonical"),
        early("newline inside", "JW-17", lambda w: w.mint().replace(".", ".\n", 1), "base64url"),
        early("trailing newline", "JW-17", lambda w: w.mint() + "\n", "base64url"),
        early("non-ASCII", "JW-17", lambda w: w.mint() + "\u00e9", "ASCII"),
        early(
            "header not JSON",
            "JW-17",
            lambda w: raw_token('{"alg":"RS256"', w.claims, None) + "c2ln",
            "header",
        ),
        early(
            "header a JSON array",
            "JW-17",
            lambda w: raw_token('["RS256"]', w.claims, None) + "c2ln",
            "header",
        ),
        early(
            "header a JSON string",
            "JW-17",
            lambda w: raw_token('"RS256"', w.claims, None) + "c2ln",
            "header",
        ),
        early(
            "header null", "JW-17", lambda w: raw_token("null", w.claims, None) + "c2ln", "header"
        ),
        early(
            "header invalid UTF-8",
            "JW-17",
            lambda w: raw_token(b'{"alg":"RS256","x":"\xff"}', w.claims, None) + "c2ln",
            "header",
        ),
        early(
            "header with a BOM",
            "JW-17",
            lambda w: raw_token(b'\xef\xbb\xbf{"alg":"RS256"}', w.claims, None) + "c2ln",
            "header",
        ),
        early(
            "header with NaN",
            "JW-17",
            lambda w: raw_token('{"alg":"RS256","x":NaN}', w.claims, None) + "c2ln",
            "header",
        ),
        early(
            "duplicate alg in the header",
            "JW-17",
            lambda w: raw_token(
                f'{{"alg":"none","alg":"RS256","kid":"{w.kid}"}}', w.claims, rs256(w.provider_key)
            ),
            "header",
        ),
        early(
            "deeply nested header",
            "JW-17",
            lambda w: (
                raw_token('{"alg":"RS256","x":' + nested(5000) + "}", w.claims, None) + "c2ln"
            ),
            "header",
        ),
        early("header crit", "JW-17", lambda w: w.craft({"crit": ["exp"], "exp": 1}), "extension"),
        early(
            "header b64 false",
            "JW-17",
            lambda w: w.craft({"b64": False, "crit": ["b64"]}),
            "extension",
        ),
        early("payload not JSON", "JW-17", lambda w: w.payload("{"), "payload"),
        early("payload a JSON array", "JW-17", lambda w: w.payload("[]"), "payload"),
        early("payload a number", "JW-17", lambda w: w.payload("1"), "payload"),
        early(
            "payload in UTF-16",
            "JW-17",
            lambda w: raw_token(
                {"alg": "RS256", "kid": w.kid},
                json.dumps(w.claims).encode("utf-16"),
                rs256(w.provider_key),
            ),
            "payload",
        ),
        early(
            "payload Infinity",
            "JW-17",
            lambda w: w.payload("{" + w.claims_json() + ',"x":Infinity}'),
            "payload",
        ),
        early(
            "payload 1e999",
            "JW-17",
            lambda w: w.payload("{" + w.claims_json() + ',"x":1e999}'),
            "payload",
        ),
        early(
            "payload 5000-digit integer",
            "JW-17",
            lambda w: w.payload("{" + w.claims_json() + ',"x":' + "9" * 5000 + "}"),
            "payload",
        ),
        early(
            "duplicate aud, ours last",
            "JW-17",
            lambda w: w.payload("{" + w.claims_json(aud="api://other") + f',"aud":"{AUDIENCE}"}}'),
            "payload",
        ),
        early(
            "duplicate aud, ours first",
            "JW-17",
            lambda w: w.payload(f'{{"aud":"{AUDIENCE}",' + w.claims_json(aud="api://other") + "}"),
            "payload",
        ),
        early(
            "duplicate tid",
            "JW-17",
            lambda w: w.payload("{" + w.claims_json(tid=OTHER_TENANT) + f',"tid":"{w.tid}"}}'),
            "payload",
        ),
        early(
            "duplicate key in a nested object",
            "JW-17",
            lambda w: w.payload("{" + w.claims_json() + ',"x":{"a":1,"a":2}}'),
            "payload",
        ),
        early(
            "deeply nested payload, validly signed",
            "JW-17",
            lambda w: w.payload("{" + w.claims_json() + ',"x":' + nested(3000) + "}"),
            "payload",
        ),
        early(
            "deeply nested objects in the payload",
            "JW-17",
            lambda w: w.payload('{"a":' * 1500 + "1" + "}" * 1500),
            "payload",
        ),
        early("100 kB token", "JW-17", lambda w: w.craft(filler="x" * 100_000), "too large"),
        early("100 kB of junk", "JW-17", lambda w: "A" * 100_000, "too large"),
        early(
            "one byte over max_token_bytes",
            "JW-17",
            lambda w: w.mint(),
            "too large",
            policy="tight",
        ),
    ]


CASES: Final = [
    *BASELINE,
    *ALG_NONE,
    *ALG_CONFUSION,
    *KEY_SUPPLY,
    *TIMES,
    *issuer_variants(),
    *TEMPLATES,
    *TOKEN_TYPES,
    *NOAUTH,
    *malformed(),
]


def policy_for(case: Case, world: World, token: str) -> BearerPolicy:
    if case.policy == "tight":
        return replace(world.policy(), max_token_bytes=len(token) - 1)
    if case.policy == "exact":
        return replace(world.policy(), max_token_bytes=len(token))
    return world.policy(case.policy)


@pytest.mark.threat(*sorted(THREATS))
def test_the_table_covers_every_a3_threat() -> None:
    assert {case.threat for case in CASES} == THREATS
    assert len({case.id for case in CASES}) == len(CASES), "case ids must be unique"


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.id, marks=pytest.mark.threat(c.threat)) for c in CASES]
)
def test_bearer_case(world: World, case: Case) -> None:
    token = case.token(world)
    policy = policy_for(case, world, token)
    keys = world.keys if case.keys is None else case.keys(world)
    now = world.now if case.now is None else case.now(world)
    if case.expect is None:
        claims = validate(token, keys, policy, now=now)
        assert claims["aud"] in policy.audiences
        assert keys.calls == [jwt.get_unverified_header(token).get("kid")]
        assert user_key(claims) == f"{claims['oid']}.{claims['tid']}"
        return
    with pytest.raises(InvalidBearer) as caught:
        validate(token, keys, policy, now=now)
    refusal = caught.value
    assert type(refusal) is case.expect
    message = str(refusal)
    assert case.reason in message
    # Short fixed reasons: nothing taken from the token is echoed to the client or the log.
    assert len(message) < 80
    assert message.isascii() and message.isprintable()
    assert not any(word in message for word in ("attacker", "evil", "victim", "http", "{", "["))
    # `keys` is asked once, and only for a token that parsed.
    assert len(keys.calls) == (0 if case.early else 1)


# ---- keys: rotation and refetch -----------------------------------------------------------------


@pytest.mark.threat("F-11")
def test_rotated_key_is_unknown_until_the_keys_are_refetched(world: World) -> None:
    policy = world.policy()
    old_token = world.mint()
    world.idp.rotate_signing_key(keep_old=False)
    new_token = world.mint()
    with pytest.raises(UnknownKey):
        validate(new_token, world.keys, policy)
    assert validate(old_token, world.keys, policy)["tid"] == world.tid

    refetched = fetch_keys(world.idp)  # what the caller does on UnknownKey, rate-limited
    assert validate(new_token, refetched, policy)["tid"] == world.tid
    with pytest.raises(UnknownKey):  # the old key is no longer published
        validate(old_token, refetched, policy)


@pytest.mark.threat("F-11")
def test_rotation_that_keeps_the_old_key_accepts_both(world: World) -> None:
    old_token = world.mint()
    world.idp.rotate_signing_key(keep_old=True)
    new_token = world.mint()
    refetched = fetch_keys(world.idp)
    for token in (old_token, new_token):
        assert validate(token, refetched, world.policy())["oid"] == world.claims["oid"]
    assert len(set(refetched.calls)) == 2


@pytest.mark.threat("JW-17")
def test_malformed_tokens_are_refused_quickly(world: World) -> None:
    samples = [case.token(world) for case in malformed() if case.policy == "default"]
    policy = world.policy()
    started = time.perf_counter()
    for _ in range(20):
        for token in samples:
            with pytest.raises(InvalidBearer):
                validate(token, world.keys, policy)
    per_token = (time.perf_counter() - started) / (20 * len(samples))
    assert per_token < 0.005  # generous: a 2048-bit RSA check alone takes ~0.05 ms
