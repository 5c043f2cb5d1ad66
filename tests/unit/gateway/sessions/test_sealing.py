"""The Sealer (gateway.sessions.sealing) that encrypts stored records and digests store keys:
records round-trip, are bound to their store key and secret, and any change to the bytes is a
CorruptRecordError that carries nothing of the plaintext (THREATS.md RS-03, encryption at rest).
Long records are sealed deflated; records of the first (uncompressed) format keep opening.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Callable
from typing import Final

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.auth.cookies import mint_id
from gateway.errors import CorruptRecordError
from gateway.sessions.sealing import Sealer

SECRET_A: Final = b"a" * 32
SECRET_B: Final = b"b" * 32
STORE_KEY: Final = "gw:session:0123abcd"


@pytest.mark.parametrize(
    "plaintext", [b"", b"x", b'{"user":"ada","roles":["a"]}', bytes(range(256)) * 64]
)
def test_seal_then_open_round_trips(plaintext: bytes) -> None:
    sealer = Sealer(SECRET_A)
    assert sealer.open(STORE_KEY, sealer.seal(STORE_KEY, plaintext)) == plaintext


def test_another_sealer_with_the_same_secret_opens_the_record() -> None:
    sealed = Sealer(SECRET_A).seal(STORE_KEY, b"shared across replicas")
    assert Sealer(SECRET_A).open(STORE_KEY, sealed) == b"shared across replicas"


def test_sealing_twice_gives_different_bytes() -> None:
    sealer = Sealer(SECRET_A)
    assert sealer.seal(STORE_KEY, b"same") != sealer.seal(STORE_KEY, b"same")


def test_sealed_bytes_do_not_contain_the_plaintext() -> None:
    plaintext = b"refresh_token=0.AAAA-very-secret-refresh-token-value"
    sealed = Sealer(SECRET_A).seal(STORE_KEY, plaintext)
    assert plaintext not in sealed
    assert b"very-secret" not in sealed
    assert STORE_KEY.encode() not in sealed


@pytest.mark.parametrize(
    "other_key", ["gw:session:0123abce", "gw:session:", STORE_KEY + " ", STORE_KEY.upper()]
)
def test_record_copied_under_another_store_key_does_not_open(other_key: str) -> None:
    sealer = Sealer(SECRET_A)
    sealed = sealer.seal(STORE_KEY, b"victim session")
    with pytest.raises(CorruptRecordError):
        sealer.open(other_key, sealed)


def test_every_flipped_byte_is_detected() -> None:
    sealer = Sealer(SECRET_A)
    sealed = sealer.seal(STORE_KEY, b"session payload")
    for index in range(len(sealed)):
        for mask in (0x01, 0x80):
            tampered = bytearray(sealed)
            tampered[index] ^= mask
            with pytest.raises(CorruptRecordError):
                sealer.open(STORE_KEY, bytes(tampered))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b"",
        lambda b: b[:1],
        lambda b: b[:-1],
        lambda b: b[:29],
        lambda b: b + b"\x00",
        lambda b: b"\x02" + b[1:],
        lambda b: b"\x00" * len(b),
        lambda b: b[1:],
    ],
    ids=[
        "empty",
        "version-only",
        "truncated",
        "too-short",
        "extended",
        "version",
        "zeroed",
        "shifted",
    ],
)
def test_malformed_record_is_corrupt_not_a_crash(mangle: Callable[[bytes], bytes]) -> None:
    sealer = Sealer(SECRET_A)
    sealed = sealer.seal(STORE_KEY, b"payload")
    with pytest.raises(CorruptRecordError):
        sealer.open(STORE_KEY, mangle(sealed))


def test_record_sealed_under_another_secret_does_not_open() -> None:
    sealed = Sealer(SECRET_A).seal(STORE_KEY, b"payload")
    with pytest.raises(CorruptRecordError):
        Sealer(SECRET_B).open(STORE_KEY, sealed)


def test_sealers_without_a_secret_do_not_open_each_others_records() -> None:
    sealed = Sealer(None).seal(STORE_KEY, b"payload")
    with pytest.raises(CorruptRecordError):
        Sealer(None).open(STORE_KEY, sealed)


def test_corrupt_record_message_does_not_contain_the_plaintext() -> None:
    sealer = Sealer(SECRET_A)
    sealed = bytearray(sealer.seal(STORE_KEY, b"secret-claim-value"))
    sealed[-1] ^= 1
    with pytest.raises(CorruptRecordError) as caught:
        sealer.open(STORE_KEY, bytes(sealed))
    assert "secret-claim-value" not in str(caught.value)


def test_digest_is_stable_per_secret_and_differs_between_secrets() -> None:
    identifier = mint_id()
    first, again = Sealer(SECRET_A).digest(identifier), Sealer(SECRET_A).digest(identifier)
    other = Sealer(SECRET_B).digest(identifier)
    assert first == again
    assert first != other
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert identifier not in first


def test_digest_differs_per_identifier() -> None:
    sealer = Sealer(SECRET_A)
    digests = {sealer.digest(mint_id()) for _ in range(500)}
    assert len(digests) == 500
    assert sealer.digest("a") != sealer.digest("A")


def test_binding_and_digest_are_separate_keys() -> None:
    sealer = Sealer(SECRET_A)
    value = mint_id()
    assert sealer.binding(value) != sealer.digest(value)
    assert sealer.binding(value) == Sealer(SECRET_A).binding(value)
    assert sealer.binding(value) != Sealer(SECRET_B).binding(value)


# ---- a ring of secrets: the current one seals, the next and previous ones only open ----

SECRET_C: Final = b"c" * 32


def test_a_ring_seals_with_the_current_secret_only() -> None:
    ring = Sealer(SECRET_B, next_secret=SECRET_C, previous=[SECRET_A])
    sealed = ring.seal(STORE_KEY, b"payload")
    assert Sealer(SECRET_B).open(STORE_KEY, sealed) == b"payload"
    for other in (SECRET_A, SECRET_C):
        with pytest.raises(CorruptRecordError):
            Sealer(other).open(STORE_KEY, sealed)


def test_a_previous_secret_opens_and_marks_the_record_stale_a_next_one_does_not() -> None:
    ring = Sealer(SECRET_B, next_secret=SECRET_C, previous=[SECRET_A])
    by_current = ring.open_aged(STORE_KEY, ring.seal(STORE_KEY, b"b"))
    by_previous = ring.open_aged(STORE_KEY, Sealer(SECRET_A).seal(STORE_KEY, b"a"))
    by_next = ring.open_aged(STORE_KEY, Sealer(SECRET_C).seal(STORE_KEY, b"c"))
    assert (by_current.plaintext, by_current.stale) == (b"b", False)
    assert (by_previous.plaintext, by_previous.stale) == (b"a", True)
    assert (by_next.plaintext, by_next.stale) == (b"c", False)


def test_a_dropped_secret_no_longer_opens() -> None:
    sealed = Sealer(SECRET_A).seal(STORE_KEY, b"payload")
    with pytest.raises(CorruptRecordError):
        Sealer(SECRET_B, next_secret=SECRET_C).open(STORE_KEY, sealed)


def test_store_names_lead_with_the_current_secret_then_the_others_in_order() -> None:
    identifier = mint_id()
    ring = Sealer(SECRET_B, next_secret=SECRET_C, previous=[SECRET_A, SECRET_B])
    assert ring.rotating and not Sealer(SECRET_B).rotating
    assert ring.digest(identifier) == Sealer(SECRET_B).digest(identifier)
    assert ring.older_digests(identifier) == (
        (Sealer(SECRET_C).digest(identifier), False),
        (Sealer(SECRET_A).digest(identifier), True),  # the current one listed again is skipped
    )


def test_a_browser_binding_made_under_any_configured_secret_is_recognised() -> None:
    value = mint_id()
    ring = Sealer(SECRET_B, previous=[SECRET_A])
    assert ring.binds(value, Sealer(SECRET_A).binding(value))
    assert ring.binds(value, ring.binding(value))
    assert not ring.binds(mint_id(), ring.binding(value))
    assert not Sealer(SECRET_B).binds(value, Sealer(SECRET_A).binding(value))


# ---- record formats: 0x01 seals the plaintext, 0x02 its deflate; every sealer opens both ----

RECORD: Final = (
    b'{"v":1,"user_key":"0b7e2c1d.5c3e5f0a","claims":{"name":"Alice Example","roles":["Reader"]},'
    + b'"id_token":"eyJhbGciOiJSUzI1NiJ9.'
    + b"eyJzdWIiOiJhbGljZSJ9" * 40
    + b'.sig","created_at":1796665460.95}'
)


def _sealed_by_the_first_format(secret: bytes, store_key: str, plaintext: bytes) -> bytes:
    """A 0x01 record made the way gateways before compression made it, from the primitives
    (HKDF-SHA256 key, AES-256-GCM, the store key as associated data), not through Sealer."""
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"msal-gateway/v1", info=b"record-encryption"
    ).derive(secret)
    nonce = os.urandom(12)
    return b"\x01" + nonce + AESGCM(key).encrypt(nonce, plaintext, store_key.encode())


def test_a_long_record_is_sealed_deflated_and_smaller() -> None:
    sealed = Sealer(SECRET_A).seal(STORE_KEY, RECORD)
    assert sealed[:1] == b"\x02"
    assert len(sealed) < len(RECORD) * 0.7
    assert Sealer(SECRET_A).open(STORE_KEY, sealed) == RECORD


@pytest.mark.parametrize("plaintext", [b"", b"short index entry", os.urandom(4096)])
def test_short_or_incompressible_records_keep_the_first_format(plaintext: bytes) -> None:
    sealed = Sealer(SECRET_A).seal(STORE_KEY, plaintext)
    assert sealed[:1] == b"\x01"
    assert len(sealed) == 1 + 12 + len(plaintext) + 16
    assert Sealer(SECRET_A).open(STORE_KEY, sealed) == plaintext


def test_without_compression_every_record_has_the_first_format() -> None:
    sealed = Sealer(SECRET_A, compress=False).seal(STORE_KEY, RECORD)
    assert sealed[:1] == b"\x01"
    assert Sealer(SECRET_A, compress=True).open(STORE_KEY, sealed) == RECORD


def test_records_of_the_first_format_still_open_and_are_not_stale() -> None:
    old = _sealed_by_the_first_format(SECRET_A, STORE_KEY, RECORD)
    for sealer in (Sealer(SECRET_A), Sealer(SECRET_A, compress=False)):
        opened = sealer.open_aged(STORE_KEY, old)
        assert (opened.plaintext, opened.stale) == (RECORD, False)


def test_a_compressing_and_a_plain_replica_open_each_others_records() -> None:
    compressing, plain = Sealer(SECRET_A), Sealer(SECRET_A, compress=False)
    assert plain.open(STORE_KEY, compressing.seal(STORE_KEY, RECORD)) == RECORD
    assert compressing.open(STORE_KEY, plain.seal(STORE_KEY, RECORD)) == RECORD


def test_deflated_records_follow_the_secret_ring() -> None:
    by_previous = Sealer(SECRET_A).seal(STORE_KEY, RECORD)
    opened = Sealer(SECRET_B, previous=[SECRET_A]).open_aged(STORE_KEY, by_previous)
    assert (opened.plaintext, opened.stale) == (RECORD, True)
    with pytest.raises(CorruptRecordError):
        Sealer(SECRET_B).open(STORE_KEY, by_previous)
    with pytest.raises(CorruptRecordError):
        Sealer(SECRET_A).open("gw:session:0123abce", by_previous)


@pytest.mark.parametrize(
    "relabel", [b"\x01", b"\x02"], ids=["deflated-as-plain", "plain-as-deflated"]
)
def test_a_record_relabelled_as_the_other_format_does_not_open(relabel: bytes) -> None:
    sealer = Sealer(SECRET_A)
    sealed = (
        sealer.seal(STORE_KEY, RECORD)
        if relabel == b"\x01"
        else _sealed_by_the_first_format(SECRET_A, STORE_KEY, RECORD)
    )
    assert sealed[:1] != relabel
    with pytest.raises(CorruptRecordError):
        sealer.open(STORE_KEY, relabel + sealed[1:])


def _sealed_deflated_payload(payload: bytes) -> bytes:
    """A 0x02 record whose authenticated body is `payload` as given (not a valid deflate)."""
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"msal-gateway/v1", info=b"record-encryption"
    ).derive(SECRET_A)
    nonce = os.urandom(12)
    return b"\x02" + nonce + AESGCM(key).encrypt(nonce, payload, b"\x02" + STORE_KEY.encode())


def _deflate(data: bytes) -> bytes:
    deflater = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return deflater.compress(data) + deflater.flush()


@pytest.mark.parametrize(
    "payload",
    [
        b"not deflate at all \xff\xfe",
        _deflate(RECORD)[:-8],  # cut short
        _deflate(RECORD) + b"trailing",
        _deflate(b"\x00" * (8 * 2**20)),  # a bomb: twice what any record may inflate to
    ],
    ids=["garbage", "truncated", "trailing-bytes", "oversized"],
)
def test_an_authenticated_body_that_does_not_inflate_whole_is_corrupt(payload: bytes) -> None:
    with pytest.raises(CorruptRecordError):
        Sealer(SECRET_A).open(STORE_KEY, _sealed_deflated_payload(payload))
