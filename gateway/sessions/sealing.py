"""Secrets derived from the cookie secret: AEAD sealing of stored records and digests of store keys.

Nothing readable reaches the store: records are sealed with AES-256-GCM, and the record's store key
is bound into the seal as associated data, so a record copied under another key does not open.
Store keys are keyed digests of the session id or `state`, so a store dump yields no usable cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.errors import CorruptRecordError

_VERSION: Final = b"\x01"
_NONCE_BYTES: Final = 12


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"msal-gateway/v1", info=purpose).derive(
        secret
    )


class Sealer:
    """Seals and opens records, and digests identifiers into store keys.

    Built from the configured cookie secret so that every replica derives the same keys; without a
    secret (memory store only) a random per-process secret is used.
    """

    def __init__(self, secret: bytes | None) -> None:
        material = secret if secret is not None else secrets.token_bytes(32)
        self._aead = AESGCM(_derive(material, b"record-encryption"))
        self._digest_key = _derive(material, b"store-key-digest")
        self._binding_key = _derive(material, b"browser-binding")

    def digest(self, identifier: str) -> str:
        """A store-key component for a session id or state: keyed, so it cannot be brute-forced."""
        return hmac.new(self._digest_key, identifier.encode(), hashlib.sha256).hexdigest()

    def binding(self, value: str) -> str:
        """A keyed digest of a browser-binding cookie value, kept in the pending sign-in record."""
        return hmac.new(self._binding_key, value.encode(), hashlib.sha256).hexdigest()

    def seal(self, store_key: str, plaintext: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, store_key.encode())

    def open(self, store_key: str, sealed: bytes) -> bytes:
        """The plaintext; CorruptRecordError for anything but our own seal for this key."""
        if len(sealed) < 1 + _NONCE_BYTES + 16 or sealed[:1] != _VERSION:
            raise CorruptRecordError(f"record under {store_key} has an unknown format")
        nonce, body = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, store_key.encode())
        except InvalidTag as exc:
            raise CorruptRecordError(f"record under {store_key} failed authentication") from exc
