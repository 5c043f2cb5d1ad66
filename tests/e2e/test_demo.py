"""`msal-gateway demo` as a user runs it: a browser signs in at the development identity provider
(query response mode over plain http on loopback) and the sample app greets the user by name."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from support.browser import Browser
from support.gateway import idp_ssl
from support.ports import free_port


@pytest.fixture
def demo() -> Iterator[tuple[str, str]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "AZURE_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    assert process.stdout is not None
    banner = ""
    deadline = time.monotonic() + 20
    while "Press Ctrl+C" not in banner and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        banner += line
    try:
        match = re.search(r"CA at (\S+)\)", banner)
        assert match, banner
        assert f"http://127.0.0.1:{port}/" in banner
        assert "alice" in banner
        yield f"http://127.0.0.1:{port}", match.group(1)
    finally:
        process.terminate()
        status = process.wait(10)
        process.stdout.close()
        assert status == 0


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
