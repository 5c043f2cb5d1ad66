"""Shared fixtures: the upstream echo app, Redis servers, and gateways with scripted browsers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from devidp.groups import READERS
from gateway.config.settings import Settings
from gateway.keys import STORAGE
from gateway.store.measured import MeasuredStorage
from gateway.store.memory import MemoryStorage
from support.browser import API, NAVIGATE, Browser
from support.gateway import PUBLIC_URL, SESSION_COOKIE, idp_ssl, in_process, settings_for
from support.idp import ALICE_OID
from support.redis_server import RedisServer
from support.threaded import ThreadedServer
from support.upstream import make_upstream_app


@pytest.fixture(scope="session")
def upstream() -> Iterator[ThreadedServer]:
    """The echo app; stateless, so one per test session."""
    server = ThreadedServer(make_upstream_app).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session; tests that need a clean one flush it (see `redis_url`)."""
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.command("FLUSHALL")
    return redis_server.url


@dataclass
class Running:
    url: str
    app: web.Application
    settings: Settings
    browser: Browser


Launch = Callable[..., Awaitable[Running]]


@pytest.fixture
async def launch(idp: Any, upstream: ThreadedServer) -> AsyncIterator[Launch]:
    """Start in-process gateways (with a fresh browser each) configured by keyword overrides."""
    async with AsyncExitStack() as stack:

        async def start(*, wait_ready: bool = True, **overrides: Any) -> Running:
            settings = settings_for(idp, upstream.url, **overrides)
            url, app = await stack.enter_async_context(in_process(settings, wait=wait_ready))
            browser = Browser(url, settings.public_origin, idp_ssl(idp.ca_path))
            stack.push_async_callback(browser.close)
            return Running(url, app, settings, browser)

        yield start


async def signed_in(running: Running, path: str = "/", user: str = "alice") -> None:
    """Sign `user` in through the real flow, back to `path`, in the gateway's own browser."""
    response = await running.browser.sign_in(path, user)
    assert response.status == 302, await response.text()
    assert response.headers["Location"] == path


async def share_session(source: Running, target: Running) -> None:
    """`target`'s browser gets the session cookie `source`'s browser holds (replicas of one
    store: the same session, seen through another gateway)."""
    cookie = source.settings.session_cookie_name
    value = source.browser.cookie(cookie)
    assert value is not None
    target.browser.jar.clear()
    target.browser.jar.update_cookies({cookie: value}, target.browser.jar_origin())


def stored_keys(running: Running) -> list[str]:
    """Every key an in-process gateway's memory store holds (read straight from the store)."""
    measured = running.app[STORAGE]
    assert isinstance(measured, MeasuredStorage)
    storage = measured.inner
    assert isinstance(storage, MemoryStorage)
    return list(storage._items)


async def assert_signed_out(
    url: str, client: aiohttp.ClientSession, cookie: str, path: str
) -> None:
    """A session cookie value that identifies no one: 401 for an API client and for
    forward-auth, a redirect to sign-in for a browser, a clean error and never a 500."""
    for target, headers, expected in (
        (path, API, 401),
        (path, NAVIGATE, 302),
        ("/.auth/me", API, 401),
        ("/.auth/verify", API, 401),
    ):
        async with client.get(
            url + target,
            headers={**headers, "Cookie": f"{SESSION_COOKIE}={cookie}"},
            allow_redirects=False,
        ) as response:
            body = await response.read()
            assert response.status == expected, (target, response.status, body[:300])
            if expected == 302:
                assert response.headers["Location"].startswith("/.auth/login/aad")
            else:
                assert json.loads(body)["error"] in ("sign_in_required", "session_expired")


# The reference route policy: one rule of each kind, and public paths.
ROUTE_RULES = [
    {"path": "/public/", "allow": "public"},
    {"path": "/healthz", "allow": "public"},
    {"path": "/readers/", "groups": READERS.id},
    {"path": "/writers/", "roles": "Writer"},
    {"path": "/alice/", "users": ALICE_OID},
    {"path": "/contoso/", "domains": "contoso.example"},
    {"path": "/bob-only/", "emails": "bob@contoso.example"},
    {"path": "/other-tenant/", "tenants": "11111111-2222-3333-4444-555555555555"},
    {"path": "/closed/", "allow": "deny"},
    {"path": "/orders/", "methods": "POST", "roles": "Writer"},
]


@pytest.fixture
async def guarded(launch: Launch) -> Running:
    """A gateway with ROUTE_RULES, the reference route policy."""
    return await launch(policy={"rules": ROUTE_RULES})


@pytest.fixture
async def gateway(launch: Launch) -> Running:
    """A gateway with default settings (memory store, form_post, no bearer scopes)."""
    return await launch()


__all__ = ["PUBLIC_URL", "gateway", "guarded", "launch", "redis_server", "redis_url", "upstream"]
