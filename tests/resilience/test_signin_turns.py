"""A sign-in storm meets a bound, not a pile-up: at most GATEWAY_SIGNIN__MAX_CONCURRENT sign-in
steps run at once; a start or callback that finds no turn within GATEWAY_SIGNIN__QUEUE_SECONDS is
answered 503 with Retry-After at once, and a refused callback still completes when sent again.
Sign-in steps have threads of their own, so signed-in users' token refreshes go on meanwhile.

The identity provider's token endpoint is held for a while (the dev IdP's delay fault), so one
callback keeps the only turn while the others arrive."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.browser import API, AuthResponse, Browser
from support.fixtures import Launch, Running, signed_in
from support.gateway import idp_ssl

HELD_SECONDS = 2.0
QUEUE_SECONDS = 0.5


@pytest.fixture
async def browsers(idp: Any) -> AsyncIterator[list[Browser]]:
    made: list[Browser] = []
    yield made
    for browser in made:
        await browser.close()


async def authorized(
    running: Running, idp: Any, browsers: list[Browser], count: int
) -> list[tuple[Browser, AuthResponse]]:
    """`count` browsers of their own, each back from the provider with its answer in hand."""
    started = []
    for _ in range(count):
        browser = Browser(running.url, running.settings.public_origin, idp_ssl(idp.ca_path))
        browsers.append(browser)
        started.append((browser, await browser.authorize(await browser.start_sign_in("/"))))
    return started


async def timed(work: Any) -> tuple[float, Any]:
    began = time.monotonic()
    response = await work
    return time.monotonic() - began, response


async def test_callbacks_beyond_the_bound_get_503_with_retry_after_then_complete(
    launch: Launch, idp: Any, browsers: list[Browser]
) -> None:
    running = await launch(signin={"max_concurrent": 1, "queue_seconds": QUEUE_SECONDS})
    (first, first_auth), *others = await authorized(running, idp, browsers, 4)
    idp.delay("token", HELD_SECONDS, times=1)
    holder = asyncio.create_task(timed(first.deliver(first_auth)))
    await asyncio.sleep(0.3)  # its code redemption now holds the only turn
    latecomer = Browser(running.url, running.settings.public_origin, idp_ssl(idp.ca_path))
    browsers.append(latecomer)
    refused = await asyncio.wait_for(
        asyncio.gather(
            *(timed(browser.deliver(auth)) for browser, auth in others),
            timed(latecomer.get("/.auth/login/aad")),
        ),
        HELD_SECONDS * 3,
    )
    for elapsed, response in refused:
        assert response.status == 503, await response.text()
        assert response.headers["Retry-After"] == "2"
        # Answered when the wait ran out, not when the turn came free.
        assert QUEUE_SECONDS * 0.8 <= elapsed < HELD_SECONDS - 0.3
    held_for, response = await asyncio.wait_for(holder, HELD_SECONDS * 3)
    assert response.status == 302 and held_for >= HELD_SECONDS
    # The refused callbacks took nothing: sent again, each completes its sign-in.
    for browser, auth in others:
        again = await browser.deliver(auth)
        assert again.status == 302, await again.text()
        assert (await browser.get("/", headers=API)).status == 200


async def test_token_refreshes_go_on_while_sign_ins_hold_every_turn(
    launch: Launch, idp: Any, browsers: list[Browser]
) -> None:
    running = await launch(
        scopes="api://upstream/read",
        signin={"max_concurrent": 1, "queue_seconds": HELD_SECONDS * 2},
        msal={"worker_threads": 1},
    )
    await signed_in(running)
    [(browser, auth)] = await authorized(running, idp, browsers, 1)
    idp.delay("token", HELD_SECONDS, times=1)
    holder = asyncio.create_task(browser.deliver(auth))
    await asyncio.sleep(0.3)  # the callback's redemption holds the sign-in turn and its thread
    began = time.monotonic()
    refreshed = await running.browser.session.post(
        running.browser.local("/.auth/refresh"), headers=API
    )
    took = time.monotonic() - began
    assert refreshed.status == 200, await refreshed.text()
    assert (await refreshed.json())["status"] == "refreshed"
    assert took < HELD_SECONDS - 0.5
    assert not holder.done()
    assert (await asyncio.wait_for(holder, HELD_SECONDS * 3)).status == 302
