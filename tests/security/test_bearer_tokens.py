"""Bearer access tokens from API clients (THREATS.md A3, JW-01..JW-17) against
gateway/tokens/bearer.py.

Tokens come from the development identity provider (`idp.issue_access_token`), or are crafted here
from a minted token's claims: re-signed with the provider's own key (read from its state
directory) so that only the rule under test can refuse them, or signed with an attacker's key.
Keys come from the provider's published JWKS, fetched over TLS, exactly as the gateway gets them.
Header forms for `bearer_from` are in data/bearer_cases.json.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from support.idp import msal_session

from devidp.signing_keys import SIGNING_KEY_FILE
from gateway.endpoints import signin
from gateway.errors import BadRequest, SignInRequired
from gateway.tokens.bearer import (
    MAX_LEEWAY_SECONDS,
    BearerPolicy,
    InvalidBearer,
    MalformedAuthorization,
    UnknownKey,
    bearer_from,
    identity_claims,
    user_key,
    validate,
)

THREATS: Final = frozenset(f"JW-{n:02d}" for n in range(1, 18, 2))
API: Final = "api://gateway"
LEEWAY: Final = 60
OTHER_TENANT: Final = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
ENTRA_V2: Final = "https://login.microsoftonline.com/{tenantid}/v2.0"
ENTRA_V1: Final = "https://sts.windows.net/{tenantid}/"
ENTRA_HOST: Final = "https://login.microsoftonline.com"
VICTIM_EMAIL: Final = "victim@contoso.example"
HEADER_CASES_FILE: Final = Path(__file__).parent / "data" / "bearer_cases.json"

Signer = Callable[[bytes], bytes]


# ---- crafting tokens ----------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json_bytes(part: Mapping[str, Any] | str | bytes) -> bytes:
    if isinstance(part, bytes):
        return part
    if isinstance(part, str):
        return part.encode()
    return json.dumps(dict(part), separators=(",", ":")).encode()


def raw_token(
    header: Mapping[str, Any] | str | bytes,
    payload: Mapping[str, Any] | str | bytes,
    sign: Signer | None,
) -> str:
    """A compact JWS of exactly these bytes; `sign=None` leaves the signature empty."""
    signing_input = f"{b64(_json_bytes(header))}.{b64(_json_bytes(payload))}"
    signature = b"" if sign is None else sign(signing_input.encode())
    return f"{signing_input}.{b64(signature)}"


def rs256(key: rsa.RSAPrivateKey) -> Signer:
    return lambda data: key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def rs512(key: rsa.RSAPrivateKey) -> Signer:
    return lambda data: key.sign(data, padding.PKCS1v15(), hashes.SHA512())


def ps256(key: rsa.RSAPrivateKey) -> Signer:
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    return lambda data: key.sign(data, pss, hashes.SHA256())


def es256(key: ec.EllipticCurvePrivateKey) -> Signer:
    def sign(data: bytes) -> bytes:
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    return sign


def hs256(secret: bytes) -> Signer:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


@functools.cache
def attacker_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def weak_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point


@functools.cache
def attacker_ec() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def jwk_of(public: Any, **extra: str) -> dict[str, Any]:
    if isinstance(public, rsa.RSAPublicKey):
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
    return {**jwk, **extra}


def self_signed_der(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.DER)


def unverified_claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def toggle_unused_bit(segment: str) -> str:
    """The same bytes spelled differently: flip a padding bit of the last base64url character."""
    assert len(segment) % 4 in (2, 3)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return segment[:-1] + alphabet[alphabet.index(segment[-1]) ^ 1]


# ---- the world a case runs in -------------------------------------------------------------------


class KeySpy:
    """A `keys` lookup over a JWKS document that records every kid it is asked for."""

    def __init__(self, jwks: Mapping[str, Any], extra: Mapping[str, jwt.PyJWK] | None = None):
        published = jwt.PyJWKSet.from_dict(dict(jwks)).keys
        self.jwks = dict(jwks)
        self.by_kid = {key.key_id: key for key in published if key.key_id}
        self.by_kid.update(extra or {})
        self.calls: list[str | None] = []

    def __call__(self, kid: str | None) -> jwt.PyJWK | None:
        self.calls.append(kid)
        return None if kid is None else self.by_kid.get(kid)

    def plus(self, kid: str, jwk: Mapping[str, Any]) -> KeySpy:
        return KeySpy(self.jwks, {**self.by_kid, kid: jwt.PyJWK.from_dict(dict(jwk))})


def fetch_keys(idp: Any) -> KeySpy:
    with msal_session(idp.ca_path) as http:
        response = http.get(f"{idp.authority}/discovery/v2.0/keys")
    response.raise_for_status()
    return KeySpy(response.json())


@dataclass
class World:
    idp: Any
    keys: KeySpy
    provider_key: rsa.RSAPrivateKey  # the provider's current signing key
    kid: str
    claims: dict[str, Any]  # of a freshly minted delegated token for API
    now: int

    @property
    def tid(self) -> str:
        return str(self.idp.tenant_id)

    def policy(self, name: str = "default") -> BearerPolicy:
        home = frozenset({self.tid})
        audiences = frozenset({API, self.idp.client_id})
        template = f"{self.idp.base_url}/{{tenantid}}/v2.0"
        return {
            "default": BearerPolicy((template,), audiences, home, LEEWAY),
            "single": BearerPolicy((self.idp.issuer,), audiences, frozenset(), LEEWAY),
            "entra": BearerPolicy((ENTRA_V2, ENTRA_V1), audiences, home, LEEWAY),
            "entra-v2": BearerPolicy((ENTRA_V2,), audiences, home, LEEWAY),
            "entra-v1": BearerPolicy((ENTRA_V1,), audiences, home, LEEWAY),
            "two-tenants": BearerPolicy((template,), audiences, home | {OTHER_TENANT}, LEEWAY),
        }[name]

    def mint(self, user: str | None = "alice", *, scope: str = f"{API}/read", **kw: Any) -> str:
        return str(self.idp.issue_access_token(user, scope=scope, **kw))

    def craft(
        self,
        header: Mapping[str, Any] | None = None,
        sign: Signer | None = None,
        **changes: Any,
    ) -> str:
        """The minted token's claims with `changes` (None removes a claim), signed RS256 by the
        provider's key unless `sign` says otherwise; `header` entries (None removes) likewise."""
        head = {"alg": "RS256", "typ": "JWT", "kid": self.kid, **(header or {})}
        claims = {**self.claims, **changes}
        return raw_token(
            {k: v for k, v in head.items() if v is not None},
            {k: v for k, v in claims.items() if v is not None},
            sign or rs256(self.provider_key),
        )

    def payload(self, text: str) -> str:
        """A token whose payload is exactly `text`, signed by the provider's key."""
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        return raw_token(header, text, rs256(self.provider_key))

    def claims_json(self, **changes: Any) -> str:
        return json.dumps({**self.claims, **changes}, separators=(",", ":"))[1:-1]


@functools.cache
def initial_signing_key(path: Path) -> rsa.RSAPrivateKey:
    """The key the provider starts with and returns to on reset (loading it takes ~35 ms)."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@pytest.fixture
def world(idp: Any) -> World:
    """Function scope like `idp`: some tests rotate the provider's keys."""
    keys = fetch_keys(idp)
    provider_key = initial_signing_key(idp.state_dir / SIGNING_KEY_FILE)
    published = keys.by_kid[idp.signing_kid].key
    # The premise of every crafted case: this is the key the provider publishes and signs with.
    assert published.public_numbers() == provider_key.public_key().public_numbers()
    token = idp.issue_access_token("alice", scope=f"{API}/read")
    return World(
        idp, keys, provider_key, idp.signing_kid, unverified_claims(token), int(time.time())
    )


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


def other_tenant_issuer(w: World) -> str:
    return f"{w.idp.base_url}/{OTHER_TENANT}/v2.0"


def swap_payload(w: World, **changes: Any) -> str:
    header, _, signature = w.mint().split(".")
    return f"{header}.{b64(_json_bytes({**w.claims, **changes}))}.{signature}"


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
        lambda w: w.mint(None, scope=f"{API}/.default", claims={"roles": ["Reader"]}),
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
        lambda w: w.mint(None, scope=f"{API}/.default"),
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
        lambda w: w.craft(aud=API + "/"),
        "another audience",
    ),
    no("audience in upper case", "JW-13", lambda w: w.craft(aud=API.upper()), "another audience"),
    no("audience as a list", "JW-13", lambda w: w.craft(aud=[API]), "single string"),
    no(
        "audience list with another",
        "JW-13",
        lambda w: w.craft(aud=[API, "api://other"]),
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
            lambda w: w.payload("{" + w.claims_json(aud="api://other") + f',"aud":"{API}"}}'),
            "payload",
        ),
        early(
            "duplicate aud, ours first",
            "JW-17",
            lambda w: w.payload(f'{{"aud":"{API}",' + w.claims_json(aud="api://other") + "}"),
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


def test_the_table_covers_every_a3_threat() -> None:
    assert {case.threat for case in CASES} == THREATS
    assert len({case.id for case in CASES}) == len(CASES), "case ids must be unique"


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case.threat} {case.id}")
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


def test_rotation_that_keeps_the_old_key_accepts_both(world: World) -> None:
    old_token = world.mint()
    world.idp.rotate_signing_key(keep_old=True)
    new_token = world.mint()
    refetched = fetch_keys(world.idp)
    for token in (old_token, new_token):
        assert validate(token, refetched, world.policy())["oid"] == world.claims["oid"]
    assert len(set(refetched.calls)) == 2


def test_errors_render_as_rfc_6750_asks() -> None:
    assert issubclass(UnknownKey, InvalidBearer)
    assert issubclass(InvalidBearer, SignInRequired)
    assert (InvalidBearer.status, InvalidBearer.code) == (401, "invalid_token")
    assert (UnknownKey.status, UnknownKey.code) == (401, "invalid_token")
    assert issubclass(MalformedAuthorization, BadRequest)
    assert (MalformedAuthorization.status, MalformedAuthorization.code) == (400, "invalid_request")


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


def test_header_cases_cover_the_listed_jw_17_forms() -> None:
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


# ---- the policy ---------------------------------------------------------------------------------

TID: Final = "5c3e5f0a-7d1b-4e2c-9a48-0d6f2b1c8e37"
GOOD: Final = BearerPolicy((ENTRA_V2,), frozenset({API}), frozenset({TID}), 60)

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
    pytest.param({"audiences": API}, "frozenset", id="audiences as a string"),
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
    single = BearerPolicy((f"{ENTRA_HOST}/{TID}/v2.0",), frozenset({API}), frozenset(), 0)
    assert not single.is_multi_tenant
    assert BearerPolicy((ENTRA_V2,), frozenset({API}), frozenset({TID}), MAX_LEEWAY_SECONDS)
    assert GOOD.max_token_bytes == 16384


# ---- identity (JW-15) ---------------------------------------------------------------------------


def test_identity_is_oid_and_tid_never_the_email(world: World) -> None:
    claims = validate(world.mint(), world.keys, world.policy())
    assert user_key(claims) == f"{claims['oid']}.{world.tid}"
    # The same key as a browser session of the same user.
    assert user_key(claims) == signin.user_key(claims)
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


# ---- properties: nothing but InvalidBearer / MalformedAuthorization escapes ---------------------

PROPERTY_TID: Final = "0f0e0d0c-0b0a-4908-8706-050403020100"
PROPERTY_KID: Final = "property-key"
PROPERTY_POLICY: Final = BearerPolicy(
    ("https://issuer.example/{tenantid}/v2.0",),
    frozenset({API}),
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
        API,
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
    "aud": API,
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
    assert verified["aud"] == API and verified["tid"] == PROPERTY_TID
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
