"""Token-signing keys: the current key, the keys still published in JWKS, and a rogue key.

Like Entra, every key comes with a self-signed certificate, and `kid` equals `x5t` (the base64url
SHA-1 thumbprint of that certificate). The first key is kept in the state directory so tokens
stay verifiable across restarts; rotated keys live in memory only. The rogue key is never
published: tokens signed with it test "signed by an unknown key".
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from .tls import load_rsa_key, new_rsa_key, private_pem, write_private

SIGNING_KEY_FILE: Final = "signing-key.pem"
SIGNING_CERT_FILE: Final = "signing-cert.pem"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey
    certificate_der: bytes

    @classmethod
    def from_parts(cls, key: rsa.RSAPrivateKey, certificate: x509.Certificate) -> SigningKey:
        der = certificate.public_bytes(serialization.Encoding.DER)
        return cls(kid=b64url(hashlib.sha1(der).digest()), private_key=key, certificate_der=der)  # noqa: S324 - x5t is SHA-1 by definition (RFC 7517 4.8)

    def public_jwk(self, issuer: str) -> dict[str, object]:
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": _uint(numbers.n),
            "e": _uint(numbers.e),
            "x5c": [base64.b64encode(self.certificate_der).decode("ascii")],
            "cloud_instance_name": "microsoftonline.com",
            "issuer": issuer,
        }


def new_signing_key() -> SigningKey:
    key = new_rsa_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "devidp token signing")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return SigningKey.from_parts(key, certificate)


def load_or_create_signing_key(state_dir: Path) -> SigningKey:
    key_path, cert_path = state_dir / SIGNING_KEY_FILE, state_dir / SIGNING_CERT_FILE
    if key_path.exists() and cert_path.exists():
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        return SigningKey.from_parts(load_rsa_key(key_path), certificate)
    signing = new_signing_key()
    write_private(key_path, private_pem(signing.private_key))
    cert = x509.load_der_x509_certificate(signing.certificate_der)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return signing


class KeyRing:
    """Thread-safe holder of the signing keys; readers always see a consistent snapshot."""

    def __init__(self, first: SigningKey) -> None:
        self._lock = threading.Lock()
        self._initial = first
        self._current = first
        self._published: tuple[SigningKey, ...] = (first,)
        self._rogue: SigningKey | None = None

    @property
    def current(self) -> SigningKey:
        with self._lock:
            return self._current

    @property
    def published(self) -> tuple[SigningKey, ...]:
        with self._lock:
            return self._published

    def find(self, kid: str) -> SigningKey | None:
        return next((k for k in self.published if k.kid == kid), None)

    def rotate(self, *, keep_old: bool = True) -> SigningKey:
        """Sign with a new key from now on; keep publishing the old ones unless told not to."""
        fresh = new_signing_key()
        with self._lock:
            self._published = (fresh, *self._published) if keep_old else (fresh,)
            self._current = fresh
        return fresh

    def rogue(self) -> SigningKey:
        """A key that is never published (created on first use: RSA generation takes a while)."""
        with self._lock:
            existing = self._rogue
        if existing is not None:
            return existing
        fresh = new_signing_key()
        with self._lock:
            if self._rogue is None:
                self._rogue = fresh
            return self._rogue

    def reset(self) -> None:
        """Back to the key the emulator started with."""
        with self._lock:
            self._current = self._initial
            self._published = (self._initial,)
