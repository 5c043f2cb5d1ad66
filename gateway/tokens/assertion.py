"""The identity assertion: a short-lived ES256 JWT of the signed-in principal that the gateway
forwards to the upstream, and the JWKS document that publishes the keys to check it with. This
module signs and publishes only; choosing the header, serving `/.auth/keys` and settings are not
its business, and it does no I/O.

Keys are derived from the cookie secret and the current key period, so every replica signs with
the same key without sharing state, and a new key takes over every `rotation_seconds`. The JWKS
lists the previous, current and next period's keys, so a verifier may cache it for one period.
While the cookie secret itself rotates, the JWKS also lists those periods' keys of the next and
previous cookie secrets: a replica that still (or already) signs with one of them is verified too.

How the upstream verifies a token:

1. Fetch the JWKS from the gateway's `/.auth/keys` (cache it for at most one key period) and pick
   the key whose `kid` equals the token header's `kid`; on an unknown `kid`, refetch once.
2. Accept `alg` ES256 only, never the algorithm the header names, and no key-supplying header
   (`jku`, `x5u`, `jwk`, `x5c`).
3. Require `iss` to equal the gateway's public origin and `aud` to equal the upstream's audience,
   exactly, and reject the token after `exp` (a few seconds of leeway if clocks differ).
4. Identify the user by `sub` (stable: `oid.tid`); the other claims are the identity claims the
   gateway passes on (oid, tid, name, preferred_username, email, groups, roles).

With PyJWT: `jwt.decode(token, PyJWKSet.from_dict(jwks)[kid], algorithms=["ES256"],
issuer=ISSUER, audience=AUDIENCE, options={"require": ["exp", "iss", "aud", "sub"]})`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ALGORITHM: Final = "ES256"
DEFAULT_LIFETIME_SECONDS: Final = 120
DEFAULT_ROTATION_SECONDS: Final = 30 * 86400
DEFAULT_CACHE_SIZE: Final = 10_000

# The order of the P-256 group (SEC 2 v2, 2.4.2; FIPS 186-5 / SP 800-186 3.2.1.3).
_P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_COORDINATE_BYTES: Final = 32
_SALT: Final = (
    b"msal-gateway/v1"  # the same salt as sessions/sealing.py; the info keeps the keys apart
)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class _PeriodKey:
    private_key: ec.EllipticCurvePrivateKey
    kid: str
    jwk: Mapping[str, str]


def _period_key(secret: bytes, period: int) -> _PeriodKey:
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=_SALT,
        info=f"identity-assertion/{period}".encode(),
    ).derive(secret)
    # Into [1, n-1]. 256 bits reduced modulo n-1 ≈ 2^256 - 2^224 leaves a bias of about 2^-32,
    # which costs a private key (unlike an ECDSA nonce) no meaningful strength.
    scalar = int.from_bytes(okm, "big") % (_P256_ORDER - 1) + 1
    private_key = ec.derive_private_key(scalar, ec.SECP256R1())
    numbers = private_key.public_key().public_numbers()
    # RFC 7518 6.2.1.2: coordinates are the full field size, leading zero octets kept.
    x = _b64url(numbers.x.to_bytes(_COORDINATE_BYTES, "big"))
    y = _b64url(numbers.y.to_bytes(_COORDINATE_BYTES, "big"))
    # RFC 7638 3.2: the required members only, in lexicographic order, no whitespace.
    members = json.dumps({"crv": "P-256", "kty": "EC", "x": x, "y": y}, separators=(",", ":"))
    kid = _b64url(hashlib.sha256(members.encode("ascii")).digest())
    jwk = {"kty": "EC", "crv": "P-256", "x": x, "y": y, "use": "sig", "alg": ALGORITHM, "kid": kid}
    return _PeriodKey(private_key=private_key, kid=kid, jwk=jwk)


@dataclass(frozen=True, slots=True)
class _Signed:
    token: str
    issued_at: int


class AssertionSigner:
    """Signs identity assertions for one issuer and audience, and publishes their keys.

    Instances built from the same secret and settings sign with the same keys (replicas). A token is
    reused for the same subject and claims during the first quarter of its lifetime, so it always
    has at least three quarters left when forwarded. For one event loop: not thread-safe.
    """

    def __init__(
        self,
        secret: bytes,
        *,
        issuer: str,
        audience: str,
        lifetime_seconds: int = DEFAULT_LIFETIME_SECONDS,
        rotation_seconds: int = DEFAULT_ROTATION_SECONDS,
        clock: Callable[[], float] = time.time,
        cache_size: int = DEFAULT_CACHE_SIZE,
        also_published: tuple[bytes, ...] = (),
    ) -> None:
        """Raises ValueError for an empty secret, issuer or audience, a lifetime that is not
        positive or longer than a key period (a token must not outlive its key's publication),
        or a cache size below one."""
        if not secret:
            raise ValueError("the assertion signing secret is empty")
        if not issuer or not audience:
            raise ValueError("the assertion issuer and audience must not be empty")
        if lifetime_seconds <= 0 or rotation_seconds < lifetime_seconds:
            raise ValueError(
                f"assertion lifetime ({lifetime_seconds} s) must be positive and at most "
                f"the key rotation period ({rotation_seconds} s)"
            )
        if cache_size < 1:
            raise ValueError("the assertion cache must hold at least one token")
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self._lifetime = lifetime_seconds
        self._rotation = rotation_seconds
        self._reuse_seconds = lifetime_seconds / 4
        self._clock = clock
        self._cache_size = cache_size
        self._keys: dict[int, _PeriodKey] = {}
        # The next and previous cookie secrets' keys (a rotation, docs/security.md): published
        # so that tokens replicas sign with them verify, never used to sign here.
        self._also = tuple(s for s in dict.fromkeys(also_published) if s and s != secret)
        self._also_keys: dict[tuple[int, int], _PeriodKey] = {}
        self._tokens: OrderedDict[bytes, _Signed] = OrderedDict()

    def sign(self, claims: Mapping[str, Any], *, subject: str) -> str:
        """A compact ES256 JWS for `subject` carrying `claims` (JSON-serialisable; TypeError
        otherwise). The registered claims iss, aud, sub, iat, nbf, exp and jti are always the
        signer's own: values for them in `claims` are ignored."""
        now = self._clock()
        cache_key = hashlib.sha256(
            json.dumps([subject, dict(claims)], sort_keys=True, separators=(",", ":")).encode()
        ).digest()
        cached = self._tokens.get(cache_key)
        if cached is not None and 0 <= now - cached.issued_at < self._reuse_seconds:
            return cached.token
        key = self._key(self._period(now))
        issued_at = int(now)
        payload = {
            **claims,
            "iss": self._issuer,
            "aud": self._audience,
            "sub": subject,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + self._lifetime,
            "jti": secrets.token_urlsafe(16),
        }
        token = jwt.encode(
            payload, key.private_key, algorithm=ALGORITHM, headers={"typ": "JWT", "kid": key.kid}
        )
        # Re-inserted, not updated, so insertion order stays the age order the eviction relies on.
        self._tokens.pop(cache_key, None)
        self._tokens[cache_key] = _Signed(token=token, issued_at=issued_at)
        if len(self._tokens) > self._cache_size:
            self._tokens.popitem(last=False)
        return token

    def jwks(self) -> dict[str, Any]:
        """The JWKS of the previous, current and next period's public keys (a fresh dict; no
        private members). Publishing the next key early lets verifiers that cache this document
        for up to one period verify tokens signed after the rotation."""
        period = self._period(self._clock())
        periods = (period - 1, period, period + 1)
        keys = [dict(self._key(p).jwk) for p in periods]
        for index in range(len(self._also)):
            keys.extend(dict(self._other_key(index, p).jwk) for p in periods)
        return {"keys": keys}

    def _other_key(self, index: int, period: int) -> _PeriodKey:
        key = self._also_keys.get((index, period))
        if key is None:
            key = _period_key(self._also[index], period)
            self._also_keys = {
                (i, p): k for (i, p), k in self._also_keys.items() if abs(p - period) <= 2
            }
            self._also_keys[(index, period)] = key
        return key

    def _period(self, now: float) -> int:
        return int(now // self._rotation)

    def _key(self, period: int) -> _PeriodKey:
        key = self._keys.get(period)
        if key is None:
            key = _period_key(self._secret, period)
            # Keep only the periods the JWKS can still name, so the map stays at about three keys.
            self._keys = {p: k for p, k in self._keys.items() if abs(p - period) <= 2}
            self._keys[period] = key
        return key
