"""JWTs in tests: how one looks in text (JWT_MARK, FAKE_JWT), and crafting real ones for the
bearer-token tests (THREATS.md A3).

Tokens come from the development identity provider (`idp.issue_access_token`), or are crafted from
a minted token's claims: re-signed with the provider's own key (read from its state directory) so
that only the rule under test can refuse them, or signed with an attacker's key. Keys come from the
provider's published JWKS, fetched over TLS, exactly as the gateway gets them. A World holds all of
that for one test; KeySpy records which key ids validation asked for.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from devidp.signing_keys import SIGNING_KEY_FILE
from gateway.tokens.bearer import BearerPolicy
from support.certificates import self_signed
from support.idp import msal_session

# base64url of '{"': the start of every JWT header and payload, so of every token in any text.
JWT_MARK: Final = "eyJ"
# Shaped like a JWT, signed by no one: a token an error message or a stored record might carry.
FAKE_JWT: Final = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJsZWFrZWQifQ.c2lnbmF0dXJlLXNlY3JldA"

# ---- the world of the bearer tests --------------------------------------------------------------

AUDIENCE: Final = "api://gateway"  # the audience the gateway accepts
LEEWAY: Final = 60
OTHER_TENANT: Final = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
TID: Final = "5c3e5f0a-7d1b-4e2c-9a48-0d6f2b1c8e37"  # a tenant of no one in these tests
ENTRA_V2: Final = "https://login.microsoftonline.com/{tenantid}/v2.0"
ENTRA_V1: Final = "https://sts.windows.net/{tenantid}/"
ENTRA_HOST: Final = "https://login.microsoftonline.com"
VICTIM_EMAIL: Final = "victim@contoso.example"

Signer = Callable[[bytes], bytes]


# ---- crafting tokens ----------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def json_bytes(part: Mapping[str, Any] | str | bytes) -> bytes:
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
    signing_input = f"{b64(json_bytes(header))}.{b64(json_bytes(payload))}"
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
    return self_signed(key, "attacker").public_bytes(serialization.Encoding.DER)


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
    claims: dict[str, Any]  # of a freshly minted delegated token for AUDIENCE
    now: int

    @property
    def tid(self) -> str:
        return str(self.idp.tenant_id)

    def policy(self, name: str = "default") -> BearerPolicy:
        home = frozenset({self.tid})
        audiences = frozenset({AUDIENCE, self.idp.client_id})
        template = f"{self.idp.base_url}/{{tenantid}}/v2.0"
        return {
            "default": BearerPolicy((template,), audiences, home, LEEWAY),
            "single": BearerPolicy((self.idp.issuer,), audiences, frozenset(), LEEWAY),
            "entra": BearerPolicy((ENTRA_V2, ENTRA_V1), audiences, home, LEEWAY),
            "entra-v2": BearerPolicy((ENTRA_V2,), audiences, home, LEEWAY),
            "entra-v1": BearerPolicy((ENTRA_V1,), audiences, home, LEEWAY),
            "two-tenants": BearerPolicy((template,), audiences, home | {OTHER_TENANT}, LEEWAY),
        }[name]

    def mint(
        self, user: str | None = "alice", *, scope: str = f"{AUDIENCE}/read", **kw: Any
    ) -> str:
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


def make_world(idp: Any) -> World:
    """A World over the development identity provider as it is now (after `idp.reset()`)."""
    keys = fetch_keys(idp)
    provider_key = initial_signing_key(idp.state_dir / SIGNING_KEY_FILE)
    published = keys.by_kid[idp.signing_kid].key
    # The premise of every crafted case: this is the key the provider publishes and signs with.
    assert published.public_numbers() == provider_key.public_key().public_numbers()
    token = idp.issue_access_token("alice", scope=f"{AUDIENCE}/read")
    return World(
        idp, keys, provider_key, idp.signing_kid, unverified_claims(token), int(time.time())
    )


@functools.cache
def initial_signing_key(path: Path) -> rsa.RSAPrivateKey:
    """The key the provider starts with and returns to on reset (loading it takes ~35 ms)."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def other_tenant_issuer(w: World) -> str:
    return f"{w.idp.base_url}/{OTHER_TENANT}/v2.0"
