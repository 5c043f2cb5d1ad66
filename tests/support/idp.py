"""The development identity provider for tests: its own thread and event loop, 127.0.0.1, port 0.

The emulator must outlive each test's event loop and serve synchronous msal calls made from test
threads, so it runs on a loop of its own in a daemon thread. Also here: a `requests.Session` set up
the way msal needs it against the emulator, and a synchronous authorize step for msal-level tests.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from devidp import DevIdpConfig, RunningDevIdp, start
from devidp.config import DEFAULT_USERS

T = TypeVar("T")
USER_HEADER = "X-DevIdp-User"
ALICE_OID = next(user.oid for user in DEFAULT_USERS if user.username == "alice")
TIMEOUT_SECONDS = 10.0


class ThreadedDevIdp:
    """Runs `start(config)` on a private event loop in a daemon thread."""

    def __init__(self, config: DevIdpConfig) -> None:
        self._config = config
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._running: RunningDevIdp | None = None

    def start(self) -> RunningDevIdp:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(start(self._config), self._loop)
        try:
            self._running = future.result(timeout=60)
        except BaseException:
            self._halt()
            raise
        return self._running

    def call(self, work: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine of the emulator's (e.g. `reissue_tls_certificate`) on its loop."""
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=60)

    def stop(self) -> None:
        if self._running is not None:
            asyncio.run_coroutine_threadsafe(self._running.stop(), self._loop).result(timeout=10)
            # Let closing TLS transports finish their close_notify exchange before the loop ends.
            asyncio.run_coroutine_threadsafe(asyncio.sleep(0.05), self._loop).result(timeout=10)
        self._halt()

    def _halt(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def run_in_thread(config: DevIdpConfig) -> tuple[ThreadedDevIdp, RunningDevIdp]:
    runner = ThreadedDevIdp(config)
    return runner, runner.start()


@pytest.fixture(scope="session")
def idp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDevIdp]:
    """One emulator per test session: making its CA and RSA keys is the slow part, and `idp`
    resets everything else between tests."""
    config = DevIdpConfig(port=0, state_dir=tmp_path_factory.mktemp("devidp"))
    runner, running = run_in_thread(config)
    yield running
    runner.stop()


@pytest.fixture
def idp(idp_server: RunningDevIdp) -> RunningDevIdp:
    """Function scope: each test starts with no faults, the configured lifetimes, users and
    clients, no grants or revocations and an empty request log, whatever earlier tests did."""
    idp_server.reset()
    return idp_server


class _TimeoutSession(requests.Session):
    # msal applies no timeout to an http_client it is given (ENTRA.md a.2, c.7).
    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", TIMEOUT_SECONDS)
        return super().request(*args, **kwargs)


def msal_session(ca_path: Path | str) -> requests.Session:
    """An http_client for msal that trusts the emulator's CA whatever the environment says
    (trust_env=False ignores REQUESTS_CA_BUNDLE and proxies; ENTRA.md c.1)."""
    session = _TimeoutSession()
    session.trust_env = False
    session.verify = str(ca_path)
    return session


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.method: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form" and self.action is None:
            self.action, self.method = values.get("action", ""), values.get("method", "get")
        elif tag == "input" and values.get("type") == "hidden" and "name" in values:
            self.fields[values["name"]] = values.get("value", "")


@dataclass(frozen=True)
class FormPost:
    action: str
    method: str
    fields: dict[str, str]


def parse_form_post(page: str) -> FormPost:
    """The first form of a page and its hidden inputs (entities decoded)."""
    parser = _FormParser()
    parser.feed(page)
    assert parser.action is not None and parser.method is not None, "no form on the page"
    return FormPost(parser.action, parser.method.lower(), parser.fields)


@dataclass(frozen=True)
class AuthorizeResult:
    """What the authorize endpoint sent back: where to, and the fields (query or form_post)."""

    status: int
    redirect_uri: str
    fields: dict[str, str]
    page: str


def authorize(
    session: requests.Session, auth_uri: str, user: str | None = "alice"
) -> AuthorizeResult:
    """GET the authorize URL as `user` (no header: as a person, who gets the picker page)."""
    headers = {USER_HEADER: user} if user is not None else {}
    response = session.get(auth_uri, headers=headers, allow_redirects=False)
    if response.status_code == 302:
        location = response.headers["Location"]
        parts = urlsplit(location)
        fields = dict(parse_qsl(parts.fragment or parts.query))
        return AuthorizeResult(302, location.split("?", 1)[0].split("#", 1)[0], fields, "")
    if response.status_code == 200 and 'id="devidp-form-post"' in response.text:
        form = parse_form_post(response.text)
        return AuthorizeResult(200, form.action, form.fields, response.text)
    return AuthorizeResult(response.status_code, "", {}, response.text)
