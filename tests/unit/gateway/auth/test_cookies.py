"""Cookie ids and their Set-Cookie attributes (THREATS.md A6), and the Sealer that encrypts stored
records and digests store keys. Pure functions of gateway.auth.cookies and
gateway.sessions.sealing; requests are aiohttp's own mocked requests.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Final, Literal

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from support.gateway import SESSION_COOKIE

from gateway.auth.cookies import clear_cookie, mint_id, read_id, set_cookie
from gateway.errors import CorruptRecordError
from gateway.sessions.sealing import Sealer

URL_SAFE: Final = re.compile(r"^[A-Za-z0-9_-]+$")
SECRET_A: Final = b"a" * 32
SECRET_B: Final = b"b" * 32
STORE_KEY: Final = "gw:session:0123abcd"


def request_with_cookie(header: str) -> web.Request:
    return make_mocked_request("GET", "/", headers={"Cookie": header})


# ---- mint_id ----


def test_minted_id_carries_at_least_256_bits_and_is_url_safe() -> None:
    value = mint_id()
    assert URL_SAFE.match(value)
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    assert len(raw) * 8 >= 256


def test_minted_ids_are_distinct() -> None:
    ids = {mint_id() for _ in range(2000)}
    assert len(ids) == 2000


def test_minted_ids_do_not_share_a_prefix() -> None:
    prefixes = {mint_id()[:8] for _ in range(200)}
    assert len(prefixes) == 200


# ---- read_id ----


def test_read_id_returns_a_minted_id() -> None:
    value = mint_id()
    assert (
        read_id(request_with_cookie(f"other=1; {SESSION_COOKIE}={value}"), SESSION_COOKIE) == value
    )


@pytest.mark.parametrize(
    "value", ["a" * 32, "Z" * 64, "0123456789-_" * 3], ids=["32", "64", "mixed"]
)
def test_read_id_accepts_the_id_shape_at_its_bounds(value: str) -> None:
    assert read_id(request_with_cookie(f"{SESSION_COOKIE}={value}"), SESSION_COOKIE) == value


def test_absent_cookie_reads_as_no_id() -> None:
    assert read_id(request_with_cookie("unrelated=1"), SESSION_COOKIE) is None
    assert read_id(make_mocked_request("GET", "/"), SESSION_COOKIE) is None


_VALID: Final = "A" * 43
MALFORMED: Final = [
    "",
    "short",
    "a" * 31,
    "a" * 65,
    "a" * 4096,
    _VALID[:-1] + "+",
    _VALID[:-1] + "/",
    _VALID + "=",
    _VALID[:-2] + "==",
    _VALID[:-1] + ".",
    _VALID[:-1] + "%",
    _VALID[:-3] + "%41",
    _VALID[:-1] + "!",
    _VALID[:-1] + "~",
    _VALID[:-1] + ":",
    "../../../../etc/passwd" + "a" * 20,
    "*" * 43,
    "gw:session:" + "a" * 32,
]


@pytest.mark.parametrize("value", MALFORMED, ids=lambda v: f"{v[:12]}..len{len(v)}")
def test_read_id_treats_a_malformed_value_as_absent(value: str) -> None:
    assert read_id(request_with_cookie(f"{SESSION_COOKIE}={value}"), SESSION_COOKIE) is None


def test_read_id_checks_shape_only_so_a_flipped_character_reads_as_another_id() -> None:
    value = mint_id()
    flipped = ("B" if value[0] != "B" else "C") + value[1:]
    assert read_id(request_with_cookie(f"{SESSION_COOKIE}={flipped}"), SESSION_COOKIE) == flipped
    assert flipped != value


# ---- set_cookie / clear_cookie ----


@pytest.mark.parametrize("same_site", ["Lax", "Strict", "None"])
def test_set_cookie_is_host_only_httponly_secure_with_a_max_age(
    same_site: Literal["Lax", "None", "Strict"],
) -> None:
    response = web.Response()
    value = mint_id()
    set_cookie(response, SESSION_COOKIE, value, secure=True, max_age=3600, same_site=same_site)
    morsel = response.cookies[SESSION_COOKIE]
    assert morsel.value == value
    assert morsel["httponly"] is True
    assert morsel["secure"] is True
    assert morsel["samesite"] == same_site
    assert morsel["path"] == "/"
    assert str(morsel["max-age"]) == "3600"
    assert morsel["domain"] == ""
    assert morsel["expires"] == ""
    header = morsel.OutputString()
    for attribute in ("HttpOnly", "Secure", f"SameSite={same_site}", "Path=/", "Max-Age=3600"):
        assert attribute in header
    assert "Domain" not in header


def test_set_cookie_defaults_to_samesite_lax() -> None:
    response = web.Response()
    set_cookie(response, SESSION_COOKIE, mint_id(), secure=True, max_age=60)
    assert response.cookies[SESSION_COOKIE]["samesite"] == "Lax"


def test_set_cookie_on_plain_http_is_not_secure_but_still_httponly() -> None:
    response = web.Response()
    set_cookie(response, "msal-gateway", mint_id(), secure=False, max_age=60)
    morsel = response.cookies["msal-gateway"]
    assert not morsel["secure"]
    assert morsel["httponly"] is True
    assert "Secure" not in morsel.OutputString()


def test_cookie_header_stays_far_below_the_browser_limit() -> None:
    response = web.Response()
    set_cookie(response, SESSION_COOKIE, mint_id(), secure=True, max_age=86_400, same_site="None")
    assert len(response.cookies[SESSION_COOKIE].OutputString()) < 4096 // 8


def test_clear_cookie_expires_it_with_the_same_scope() -> None:
    response = web.Response()
    clear_cookie(response, SESSION_COOKIE, secure=True)
    morsel = response.cookies[SESSION_COOKIE]
    assert morsel.value == ""
    assert str(morsel["max-age"]) == "0"
    assert morsel["path"] == "/"
    assert morsel["secure"] is True
    assert morsel["httponly"] is True


# ---- Sealer ----


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
