"""Two applications on one host under path prefixes, each behind its own gateway, behind one nginx
(issue 16 item 1's acceptance), in a real headless Chromium: signed in to both at once as two
different people, and signing out of one leaves the other signed in.

nginx runs the documented deploy/nginx/sub-paths.conf with its placeholders replaced. The gateways
are real `python -m gateway serve` processes with GATEWAY_PUBLIC_URL=http://127.0.0.1:PORT/payroll
and .../wiki (loopback http is allowed for development), each in front of the demo's sample page,
signing in at the development identity provider (over TLS with a CA of its own, hence
--ignore-certificate-errors: every origin this browser visits is on loopback and started here).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from aiohttp import web
from support.chromium import chromium_driver, wait_for
from support.gateway import GatewayProcess, settings_for
from support.nginx import NginxServer
from support.paths import DEPLOY
from support.ports import free_port
from support.threaded import ThreadedServer

from gateway.demo import _legacy_page

try:
    from selenium.webdriver.common.by import By
except ImportError:  # pragma: no cover - support.chromium skips or fails first
    pytest.skip("selenium is not installed", allow_module_level=True)

SNIPPET: Final = DEPLOY / "nginx" / "sub-paths.conf"
PREFIXES: Final = ("/payroll", "/wiki")
WAIT_SECONDS: Final = 20.0


def sub_paths_server(port: int, gateways: dict[str, int]) -> str:
    """The documented snippet with its placeholders replaced, each exactly once."""
    text = SNIPPET.read_text()
    replacements = {
        "listen 80;": f"listen 127.0.0.1:{port};",
        "server payroll-gateway:8000;": f"server 127.0.0.1:{gateways['/payroll']};",
        "server wiki-gateway:8000;": f"server 127.0.0.1:{gateways['/wiki']};",
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"{SNIPPET.name}: expected {old!r} once"
        text = text.replace(old, new)
    return text


def _sample_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _legacy_page)
    return app


@pytest.fixture
def site(idp: Any) -> Iterator[str]:
    """nginx on one host with a gateway (and its own application) under each prefix."""
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    apps = [ThreadedServer(_sample_app).start() for _ in PREFIXES]
    gateways: list[GatewayProcess] = []
    nginx: NginxServer | None = None
    try:
        for prefix, app in zip(PREFIXES, apps, strict=True):
            settings = settings_for(idp, app.url, public_url=origin + prefix)
            gateways.append(
                GatewayProcess(settings, {"GATEWAY_PROXY__TRUSTED_PROXIES": "127.0.0.1"})
            )
        for gateway in gateways:
            asyncio.run(gateway.ready())
        ports = {prefix: g.port for prefix, g in zip(PREFIXES, gateways, strict=True)}
        nginx = NginxServer(sub_paths_server(port, ports), port=port).start()
        yield origin
    finally:
        if nginx is not None:
            nginx.cleanup()
        for gateway in gateways:
            errors = gateway.stop()
            assert gateway.returncode == 0, errors[-2000:]
        for app in apps:
            app.stop()


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Any]:
    yield from chromium_driver(tmp_path / "profile", "--ignore-certificate-errors")


def sign_in_as(driver: Any, url: str, user: str, idp: Any) -> None:
    driver.get(url)
    button = wait_for(driver, f'button[name="devidp_user"][value="{user}"]')
    assert driver.current_url.startswith(idp.authority)
    button.click()
    assert wait_for(driver, "h1", "Hello,").text == f"Hello, {user}@contoso.example"
    assert driver.current_url == url


def greeting(driver: Any, url: str) -> str:
    driver.get(url)
    return str(wait_for(driver, "h1").text)


def test_two_applications_under_two_prefixes_signed_in_at_once(
    chromium: Any, site: str, idp: Any, tmp_path: Path
) -> None:
    payroll, wiki = site + "/payroll/reports?month=5", site + "/wiki/"
    sign_in_as(chromium, payroll, "alice", idp)
    chromium.save_screenshot(str(tmp_path / "01-payroll-alice.png"))
    sign_in_as(chromium, wiki, "bob", idp)
    chromium.save_screenshot(str(tmp_path / "02-wiki-bob.png"))

    # Both at once, each as its own user: neither sign-in overwrote the other's cookie.
    assert greeting(chromium, payroll) == "Hello, alice@contoso.example"
    assert greeting(chromium, wiki) == "Hello, bob@contoso.example"
    # Every cookie the browser holds, not only the current page's (the DevTools protocol).
    cookies = {c["name"]: c for c in chromium.execute_cdp_cmd("Storage.getCookies", {})["cookies"]}
    assert cookies["msal-gateway-payroll"]["path"] == "/payroll"
    assert cookies["msal-gateway-wiki"]["path"] == "/wiki"
    assert cookies["msal-gateway-payroll"]["httpOnly"] is True
    assert not [
        name for name in cookies if name.startswith("msal-gateway") and cookies[name]["path"] == "/"
    ]

    # Sign out of payroll: its signed-out page, under its prefix; the wiki is untouched.
    chromium.get(site + "/payroll/.auth/logout")
    wait_for(chromium, "h1", "You have signed out")
    assert chromium.current_url == site + "/payroll/.auth/logout/complete"
    again = chromium.find_element(By.LINK_TEXT, "Sign in again")
    assert again.get_attribute("href") == site + "/payroll/.auth/login/aad"
    chromium.save_screenshot(str(tmp_path / "03-payroll-signed-out.png"))
    assert greeting(chromium, wiki) == "Hello, bob@contoso.example"
    chromium.save_screenshot(str(tmp_path / "04-wiki-still-bob.png"))

    # Payroll asks for a sign-in again.
    chromium.get(payroll)
    wait_for(chromium, 'button[name="devidp_user"][value="alice"]')
    assert chromium.current_url.startswith(idp.authority)
