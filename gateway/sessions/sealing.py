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

Record format (the first byte of a sealed record): 0x01 seals the plaintext as it is; 0x02 seals
its raw DEFLATE (zlib, no header or checksum: the AEAD tag already authenticates it) and binds
that byte into the associated data too, so that neither format can be passed off as the other.
Every Sealer opens both. It writes 0x02 when compression is on (GATEWAY_SESSION__COMPRESS) and the
plaintext is long enough to gain from it: a session record shrinks to about 60%, the MSAL token
cache to about 40%; short records (index entries) stay 0x01. Gateways older than the format
cannot open 0x02 records, hence the two-step rolling upgrade in docs/operations.md.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.errors import CorruptRecordError

_RAW: Final = b"\x01"
_DEFLATED: Final = b"\x02"
_NONCE_BYTES: Final = 12
_TAG_BYTES: Final = 16
# Below this, deflate seldom wins and costs CPU; such records stay readable by older gateways.
_COMPRESS_FROM: Final = 256
_DEFLATE_LEVEL: Final = 6  # 9 gains nothing on these records; writes only, never the hot path
# Far above any record; a bound on what inflating a record may allocate, whatever it holds.
_MAX_INFLATED: Final = 4 * 2**20


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
        compress: bool = True,
    ) -> None:
        self._compress = compress
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
        aead = self._current.aead
        if self._compress and len(plaintext) >= _COMPRESS_FROM:
            deflater = zlib.compressobj(_DEFLATE_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
            deflated = deflater.compress(plaintext) + deflater.flush()
            if len(deflated) < len(plaintext):
                bound = _DEFLATED + store_key.encode()
                return _DEFLATED + nonce + aead.encrypt(nonce, deflated, bound)
        return _RAW + nonce + aead.encrypt(nonce, plaintext, store_key.encode())

    def open(self, store_key: str, sealed: bytes) -> bytes:
        """The plaintext; CorruptRecordError for anything but our own seal for this key."""
        return self.open_aged(store_key, sealed).plaintext

    def open_aged(self, store_key: str, sealed: bytes) -> Opened:
        """The plaintext and whether a previous secret sealed it; CorruptRecordError for anything
        but a seal of ours (under any configured secret) for this key."""
        form = sealed[:1]
        if len(sealed) < 1 + _NONCE_BYTES + _TAG_BYTES or form not in (_RAW, _DEFLATED):
            raise CorruptRecordError(f"record under {store_key} has an unknown format")
        nonce, body = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        bound = store_key.encode() if form == _RAW else _DEFLATED + store_key.encode()
        for keys in (self._current, *self._older):  # the current secret first: the hot path
            try:
                opened = keys.aead.decrypt(nonce, body, bound)
            except InvalidTag:
                continue
            if form == _DEFLATED:
                opened = _inflate(opened, store_key)
            return Opened(opened, keys.stale)
        raise CorruptRecordError(f"record under {store_key} failed authentication")


def _inflate(deflated: bytes, store_key: str) -> bytes:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        plaintext = inflater.decompress(deflated, _MAX_INFLATED)
    except zlib.error as exc:  # authenticated, so only a sealer's bug gets here
        raise CorruptRecordError(f"record under {store_key} does not inflate") from exc
    if not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        raise CorruptRecordError(f"record under {store_key} does not inflate whole")
    return plaintext
