"""Keys derived from the cookie secrets: AEAD sealing of stored records and digests of store keys.

Nothing readable reaches the store: records are sealed with AES-256-GCM, and the record's store key
is bound into the seal as associated data, so a record copied under another key does not open.
Store keys are keyed digests of the session id or `state`, so a store dump yields no usable cookie.

Rotation (docs/security.md, "Rotating the cookie secret"): the sealer holds an ordered ring of
secrets. The current one seals and names; a *next* one (announced before it is promoted) and
*previous* ones (kept after it was) only open and name lookups. The current secret is always tried
first, so a ring costs nothing until a record fails to open with it. A record opened with a
previous secret is reported as stale, and its owner re-seals it (under the current name) on use;
one opened with the next secret is not, so replicas that disagree on which secret is current
during a rolling update never rewrite each other's records back and forth.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
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


class _Keys:
    """The keys one secret yields. `stale`: records it opened are to be re-sealed."""

    __slots__ = ("aead", "binding_key", "digest_key", "stale")

    def __init__(self, secret: bytes, *, stale: bool) -> None:
        self.aead = AESGCM(_derive(secret, b"record-encryption"))
        self.digest_key = _derive(secret, b"store-key-digest")
        self.binding_key = _derive(secret, b"browser-binding")
        self.stale = stale

    def digest(self, identifier: str) -> str:
        return hmac.new(self.digest_key, identifier.encode(), hashlib.sha256).hexdigest()

    def binding(self, value: str) -> str:
        return hmac.new(self.binding_key, value.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Opened:
    """A record's plaintext, and whether it was sealed with a previous secret (re-seal it)."""

    plaintext: bytes
    stale: bool


class Sealer:
    """Seals and opens records, and digests identifiers into store keys.

    Built from the configured cookie secrets so that every replica derives the same keys; without a
    secret (memory store only) a random per-process secret is used. `next_secret` and `previous`
    open records and name lookups but never seal.
    """

    def __init__(
        self,
        secret: bytes | None,
        *,
        next_secret: bytes | None = None,
        previous: Sequence[bytes] = (),
    ) -> None:
        material = secret if secret is not None else secrets.token_bytes(32)
        self._current = _Keys(material, stale=False)
        older: list[_Keys] = []
        seen = {material}
        for other, stale in [(next_secret, False), *((p, True) for p in previous)]:
            if other is not None and other not in seen:
                seen.add(other)
                older.append(_Keys(other, stale=stale))
        self._older = tuple(older)

    @property
    def rotating(self) -> bool:
        """Whether secrets besides the current one are configured."""
        return bool(self._older)

    def digest(self, identifier: str) -> str:
        """A store-key component for a session id or state: keyed, so it cannot be brute-forced."""
        return self._current.digest(identifier)

    def older_digests(self, identifier: str) -> tuple[tuple[str, bool], ...]:
        """The same component under the next and previous secrets, in the order to look them up
        (where a replica with another current secret keeps the record), each with whether it is
        a previous secret's (a record found there is to be moved to the current name)."""
        return tuple((keys.digest(identifier), keys.stale) for keys in self._older)

    def binding(self, value: str) -> str:
        """A keyed digest of a browser-binding cookie value, kept in the pending sign-in record."""
        return self._current.binding(value)

    def binds(self, value: str, kept: str) -> bool:
        """Whether `kept` is the binding digest of `value` under any configured secret (the
        sign-in may have started on a replica with another current secret)."""
        return any(
            hmac.compare_digest(keys.binding(value), kept) for keys in (self._current, *self._older)
        )

    def seal(self, store_key: str, plaintext: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._current.aead.encrypt(nonce, plaintext, store_key.encode())

    def open(self, store_key: str, sealed: bytes) -> bytes:
        """The plaintext; CorruptRecordError for anything but our own seal for this key."""
        return self.open_aged(store_key, sealed).plaintext

    def open_aged(self, store_key: str, sealed: bytes) -> Opened:
        """The plaintext and whether a previous secret sealed it; CorruptRecordError for anything
        but a seal of ours (under any configured secret) for this key."""
        if len(sealed) < 1 + _NONCE_BYTES + 16 or sealed[:1] != _VERSION:
            raise CorruptRecordError(f"record under {store_key} has an unknown format")
        nonce, body = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        for keys in (self._current, *self._older):  # the current secret first: the hot path
            try:
                return Opened(keys.aead.decrypt(nonce, body, store_key.encode()), keys.stale)
            except InvalidTag:
                continue
        raise CorruptRecordError(f"record under {store_key} failed authentication")
