"""Limits on what an anonymous client can cost: sign-in starts per client (an IPv6 client by its
/64) and in total, pending sign-ins per browser, a warning when every client shares one private
address, and `Expect: 100-continue` only for callers that could be signed in."""

from __future__ import annotations

import asyncio

import pytest
from support.fixtures import Launch, Running, signed_in, stored_keys

from gateway.auth.ratelimit import SHARED_ADDRESS_SAMPLE, RateLimiter, client_key


def flow_keys(running: Running) -> list[str]:
    return [key for key in stored_keys(running) if key.startswith("gw:flow:")]


async def test_sign_in_starts_are_rate_limited_per_client(launch: Launch) -> None:
    running = await launch(signin={"max_starts_per_minute": 5})
    statuses = []
    for _ in range(8):
        running.browser.jar.clear()  # a fresh anonymous client each time, same address
        statuses.append((await running.browser.get("/.auth/login/aad")).status)
    assert statuses[:5] == [302] * 5
    assert statuses[5:] == [429] * 3
    assert len(flow_keys(running)) == 5  # refused starts stored nothing


async def test_pending_sign_ins_per_browser_are_capped(launch: Launch) -> None:
    running = await launch(signin={"max_pending_per_browser": 3})
    first = await running.browser.get("/.auth/login/aad")
    for _ in range(4):
        await running.browser.get("/.auth/login/aad")
    assert len(flow_keys(running)) == 3
    # The oldest was dropped: its callback now finds no pending sign-in.
    auth = await running.browser.authorize(first.headers["Location"])
    response = await running.browser.deliver(auth)
    assert response.status == 400
    assert "expired or was already used" in await response.text()


async def raw_expect(running: Running, cookie: str | None) -> bytes:
    host, port = running.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    cookie_line = f"Cookie: {running.settings.session_cookie_name}={cookie}\r\n" if cookie else ""
    writer.write(
        (
            "POST /upload HTTP/1.1\r\nHost: app.test\r\nAccept: application/json\r\n"
            f"{cookie_line}Content-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    await writer.wait_closed()
    return first


async def test_expect_continue_is_only_for_callers_that_could_be_signed_in(
    gateway: Running,
) -> None:
    anonymous = await raw_expect(gateway, None)
    assert anonymous.startswith(b"HTTP/1.1 401")
    await signed_in(gateway)
    cookie = gateway.browser.cookie(gateway.settings.session_cookie_name)
    assert (await raw_expect(gateway, cookie)).startswith(b"HTTP/1.1 100")


def test_ipv6_clients_are_counted_by_their_64() -> None:
    """One host usually holds a whole /64: counting by address would let it in 2^64 times."""
    limits = RateLimiter(2)
    same_64 = ["2001:db8:1:2::1", "2001:db8:1:2:ffff::9", "2001:db8:1:2:abcd:ef01:2345:6789"]
    assert [limits.allow(client_key(a)) for a in same_64] == [True, True, False]
    assert limits.allow(client_key("2001:db8:1:3::1"))  # the next /64 is another client
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"  # an IPv4 client on a dual stack
    assert client_key("not an address") == "not an address"


async def test_pending_sign_ins_are_capped_in_total(launch: Launch) -> None:
    running = await launch(signin={"max_pending": 3})
    statuses, retry = [], ""
    for _ in range(5):
        running.browser.jar.clear()
        response = await running.browser.get(
            "/.auth/login/aad", headers={"Accept": "application/json"}
        )
        statuses.append(response.status)
        retry = response.headers.get("Retry-After", retry)
    assert statuses == [302, 302, 302, 503, 503]
    assert retry == "10"
    assert len(flow_keys(running)) == 3


async def test_one_shared_private_address_is_pointed_out(
    launch: Launch, caplog: pytest.LogCaptureFixture
) -> None:
    running = await launch()
    for _ in range(SHARED_ADDRESS_SAMPLE):
        running.browser.jar.clear()
        assert (await running.browser.get("/.auth/login/aad")).status == 302
    warnings = [r for r in caplog.records if getattr(r, "event", "") == "shared_client_address"]
    assert len(warnings) == 1
    assert "GATEWAY_PROXY__TRUSTED_PROXIES" in warnings[0].getMessage()
    trusting = await launch(proxy={"trusted_proxies": "10.0.0.0/8"})
    caplog.clear()
    for _ in range(SHARED_ADDRESS_SAMPLE):
        trusting.browser.jar.clear()
        await trusting.browser.get("/.auth/login/aad")
    assert not [r for r in caplog.records if getattr(r, "event", "") == "shared_client_address"]
