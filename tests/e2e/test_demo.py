"""`msal-gateway demo` as a user runs it: a browser signs in at the development identity provider
(query response mode over plain http on loopback) and the sample app greets the user by name."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.browser import Browser
from support.demo import running_demo
from support.gateway import idp_ssl
from support.paths import REPO

from devidp.config import DEFAULT_USERS


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, str]]:
    with running_demo(tmp_path / "state") as running:
        assert "alice" in running.banner
        yield running.url, running.ca_path


async def test_demo_signs_in_and_shows_identity(demo: tuple[str, str]) -> None:
    url, ca_path = demo
    browser = Browser(url, url, idp_ssl(ca_path))
    try:
        for _ in range(100):  # the gateway loads the provider's metadata just after start
            if (await browser.get("/.auth/readyz")).status == 200:
                break
            await asyncio.sleep(0.05)
        response = await browser.sign_in("/hello", "jose")
        assert response.status == 302
        page = await browser.get("/hello")
        assert page.status == 200
        text = await page.text()
        assert "<h1>Hello, jose@contoso.example</h1>" in text
        assert "José Núñez" in text  # the decoded principal carries the non-ASCII name
        assert (await browser.get("/.auth/logout")).status == 302
    finally:
        await browser.close()


def test_the_docs_name_the_demos_test_users() -> None:
    users = ", ".join(user.username for user in DEFAULT_USERS)
    for document in ("README.md", "docs/quick-start.md"):
        assert f"the test users ({users})" in " ".join((REPO / document).read_text().split())
