"""Rolling upgrades (THREATS.md F-19): a stored record in a format this version does not know
(another version's, a corrupt or a foreign one) is a sign-out, never a 500 and never a mis-read,
for sessions, token caches and pending sign-ins; the records are overwritten in a real Redis
behind in-process gateways."""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Callable
from typing import Any, Final

import aiohttp
import pytest
from support.browser import API
from support.fixtures import Launch, Running, assert_signed_out, share_session, signed_in
from support.gateway import SESSION_COOKIE
from support.jwts import FAKE_JWT
from support.redis_server import RedisServer
from support.upstream import upstream_headers

from gateway.sessions.sealing import Sealer

# ---- F-19: a stored record this version cannot read is a sign-out, never a 500 ----

ALICE: Final = "alice@contoso.example"


def resp(server: RedisServer, *parts: bytes) -> bytes:
    """One Redis command with binary arguments; the raw reply (a bulk reply read in full)."""
    payload = f"*{len(parts)}\r\n".encode() + b"".join(
        b"$%d\r\n%s\r\n" % (len(p), p) for p in parts
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        sock.sendall(payload)
        reply = sock.recv(1 << 20)
        while b"\r\n" not in reply:
            reply += sock.recv(1 << 20)
        if reply.startswith(b"$") and not reply.startswith(b"$-1"):
            first, _, _ = reply.partition(b"\r\n")
            while len(reply) < len(first) + 2 + int(first[1:]) + 2:
                reply += sock.recv(1 << 20)
        return reply


def bulk(reply: bytes) -> bytes:
    first, _, rest = reply.partition(b"\r\n")
    assert first.startswith(b"$"), reply[:80]
    return rest[: int(first[1:])]


def keys(server: RedisServer, pattern: str) -> list[str]:
    reply = server.command("KEYS", pattern).decode()
    lines = reply.split("\r\n")
    return [line for line in lines[1:] if line and not line.startswith("$")]


def replace_value(server: RedisServer, key: str, value: bytes) -> None:
    assert resp(server, b"SET", key.encode(), value, b"KEEPTTL") == b"+OK\r\n"


Garble = Callable[[str, Sealer, dict[str, Any]], bytes]


def sealed_json(change: Callable[[dict[str, Any]], object]) -> Garble:
    """A record sealed correctly (as another version would) whose JSON has another shape."""

    def build(key: str, sealer: Sealer, record: dict[str, Any]) -> bytes:
        return sealer.seal(key, json.dumps(change(dict(record))).encode())

    return build


def _with(**changes: object) -> Callable[[dict[str, Any]], object]:
    return lambda record: {**record, **changes}


def _without(name: str) -> Callable[[dict[str, Any]], object]:
    return lambda record: {k: v for k, v in record.items() if k != name}


GARBAGE: Final[dict[str, Garble]] = {
    "empty": lambda key, sealer, record: b"",
    "text": lambda key, sealer, record: b"not a record",
    "random-bytes": lambda key, sealer, record: os.urandom(96),
    "unknown-envelope-version": lambda key, sealer, record: b"\x03" + os.urandom(80),
    "deflated-envelope-wrong-tag": lambda key, sealer, record: b"\x02" + os.urandom(80),
    "truncated-envelope": lambda key, sealer, record: b"\x01" + os.urandom(8),
    "wrong-tag": lambda key, sealer, record: b"\x01" + os.urandom(60),
    "unsealed-json-record": lambda key, sealer, record: json.dumps(record).encode(),
    "sealed-under-another-key": lambda key, sealer, record: sealer.seal(
        "gw:session:" + "0" * 64, json.dumps(record).encode()
    ),
    "sealed-not-json": lambda key, sealer, record: sealer.seal(key, b"\xff\xfe\x00binary"),
    "sealed-null": sealed_json(lambda record: None),
    "sealed-list": sealed_json(lambda record: [record]),
    "sealed-string": sealed_json(lambda record: "v2:" + json.dumps(record)),
    "sealed-with-format-field": sealed_json(_with(format=2)),
    "sealed-without-claims": sealed_json(_without("claims")),
    "sealed-times-as-iso-strings": sealed_json(
        _with(created_at="2026-01-01T00:00:00Z", expires_at="2999-01-01T00:00:00Z")
    ),
    "sealed-claims-as-jwt-string": sealed_json(_with(claims=FAKE_JWT)),
    "sealed-tokens-as-list": sealed_json(_with(tokens=[])),
    "sealed-groups-as-one-string": sealed_json(_with(groups="g1,g2")),
}


@pytest.fixture
async def redis_gateway(launch: Launch, redis_url: str) -> tuple[Running, Sealer]:
    secret = secrets.token_urlsafe(32)
    running = await launch(session_store="redis", redis_url=redis_url, cookie_secret=secret)
    return running, Sealer(secret.encode())


@pytest.mark.threat("F-19")
@pytest.mark.parametrize("garble", list(GARBAGE), ids=list(GARBAGE))
async def test_unreadable_session_record_is_a_sign_out(
    redis_gateway: tuple[Running, Sealer], redis_server: RedisServer, garble: str
) -> None:
    running, sealer = redis_gateway
    await signed_in(running)
    cookie = running.browser.cookie(SESSION_COOKIE)
    assert cookie is not None
    [key] = keys(redis_server, "gw:session:*")
    record = json.loads(sealer.open(key, bulk(resp(redis_server, b"GET", key.encode()))))
    replace_value(redis_server, key, GARBAGE[garble](key, sealer, record))
    async with aiohttp.ClientSession() as client:
        await assert_signed_out(running.url, client, cookie, "/f19")
        await assert_signed_out(
            running.url, client, cookie, "/f19"
        )  # and stays so: no half-read record
    # Signing in again works: the unreadable record does not wedge the user.
    again = await running.browser.sign_in("/", "alice")
    assert again.status == 302
    page = await running.browser.get("/f19", headers=API)
    assert page.status == 200
    assert upstream_headers(await page.json())["x-ms-client-principal-name"] == [ALICE]


@pytest.mark.threat("F-19")
@pytest.mark.parametrize("garble", ["random-bytes", "unknown-envelope-version", "sealed-null"])
async def test_unreadable_token_cache_ends_the_session_on_refresh(
    redis_gateway: tuple[Running, Sealer], redis_server: RedisServer, garble: str
) -> None:
    running, sealer = redis_gateway
    await signed_in(running)
    [key] = keys(redis_server, "gw:tokens:*")
    replace_value(redis_server, key, GARBAGE[garble](key, sealer, {}))
    response = await running.browser.session.post(
        running.url + "/.auth/refresh", headers=API, allow_redirects=False
    )
    assert response.status == 401, await response.text()
    assert (await running.browser.get("/f19", headers=API)).status == 401


@pytest.mark.threat("F-19")
@pytest.mark.parametrize(
    "garble", ["random-bytes", "unknown-envelope-version", "sealed-null", "sealed-list"]
)
async def test_unreadable_pending_sign_in_is_refused_then_retried(
    redis_gateway: tuple[Running, Sealer], redis_server: RedisServer, idp: Any, garble: str
) -> None:
    running, sealer = redis_gateway
    browser = running.browser
    auth = await browser.authorize(await browser.start_sign_in("/"))
    [key] = keys(redis_server, "gw:flow:*")
    replace_value(redis_server, key, GARBAGE[garble](key, sealer, {}))
    response = await browser.deliver(auth)
    assert response.status == 400
    assert browser.cookie(SESSION_COOKIE) is None
    assert idp.token_requests() == []
    assert (await browser.sign_in("/", "alice")).status == 302


@pytest.mark.threat("F-19")
async def test_garbage_helpers_write_what_they_say(
    redis_gateway: tuple[Running, Sealer], redis_server: RedisServer
) -> None:
    """The F-19 cases really replace the stored bytes (a no-op write would pass them all)."""
    running, _ = redis_gateway
    await signed_in(running)
    [key] = keys(redis_server, "gw:session:*")
    replace_value(redis_server, key, b"not a record")
    assert bulk(resp(redis_server, b"GET", key.encode())) == b"not a record"
    ttl = int(redis_server.command("PTTL", key).decode().strip(":\r\n"))
    assert ttl > 0  # KEEPTTL: the record would still be there when the gateway reads it


# ---- the two record formats across a rolling upgrade (docs/operations.md) ----
# A replica with GATEWAY_SESSION__COMPRESS=false writes records byte for byte as versions before
# compression did (format 0x01), as the default does, so a rolling upgrade runs them beside old
# ones; then compression is turned on. Every replica of this version reads both formats,
# whichever it writes.

SCOPE: Final = "api://upstream/read"
SILENT_SECTIONS: Final = {"Account", "RefreshToken", "AppMetadata"}


def stored(server: RedisServer, pattern: str) -> tuple[str, bytes]:
    [key] = keys(server, pattern)
    return key, bulk(resp(server, b"GET", key.encode()))


async def refreshed(running: Running) -> None:
    response = await running.browser.session.post(running.url + "/.auth/refresh", headers=API)
    assert response.status == 200, await response.text()


async def serves_alice(running: Running) -> None:
    page = await running.browser.get("/formats", headers=API)
    assert page.status == 200, await page.text()
    seen = upstream_headers(await page.json())
    assert seen["x-ms-client-principal-name"] == [ALICE]
    assert seen["authorization"][0].startswith("Bearer ")


async def test_plain_and_compressing_replicas_read_each_others_records(
    launch: Launch, redis_url: str, redis_server: RedisServer
) -> None:
    secret = secrets.token_urlsafe(32)
    common: dict[str, Any] = {
        "session_store": "redis",
        "redis_url": redis_url,
        "cookie_secret": secret,
        "scopes": SCOPE,
    }
    plain = await launch(**common, session={"cache_seconds": 0})  # the default: 0x01
    compressing = await launch(**common, session={"compress": True, "cache_seconds": 0})
    sealer = Sealer(secret.encode())

    await signed_in(plain)
    session_key, first_record = stored(redis_server, "gw:session:*")
    tokens_key, first_cache = stored(redis_server, "gw:tokens:*")
    assert (first_record[:1], first_cache[:1]) == (b"\x01", b"\x01")
    # Only what MSAL renews tokens with: the record keeps the id_token and the access token.
    assert json.loads(sealer.open(tokens_key, first_cache)).keys() == SILENT_SECTIONS

    # Step 1 to step 2: a compressing replica serves and refreshes the plain replica's session.
    await share_session(plain, compressing)
    await serves_alice(compressing)
    await refreshed(compressing)
    _, record = stored(redis_server, "gw:session:*")
    _, cache = stored(redis_server, "gw:tokens:*")
    assert (record[:1], cache[:1]) == (b"\x02", b"\x02")
    assert len(record) < len(first_record) * 0.75
    assert len(cache) < len(first_cache) * 0.75
    assert json.loads(sealer.open(tokens_key, cache)).keys() == SILENT_SECTIONS

    # The plain replica reads them, and refreshes with the slimmer MSAL cache.
    await serves_alice(plain)
    await refreshed(plain)
    _, record = stored(redis_server, "gw:session:*")
    _, cache = stored(redis_server, "gw:tokens:*")
    assert (record[:1], cache[:1]) == (b"\x01", b"\x01")
    assert json.loads(sealer.open(session_key, record))["id_token"].count(".") == 2
    await serves_alice(compressing)
    await serves_alice(plain)
