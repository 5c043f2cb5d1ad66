"""pgAdmin 4 behind the gateway (docs/recipes.md#pgadmin-4): pgAdmin from PyPI in its own
virtualenv, in server mode with webserver (header) authentication, configured by the page's own
pgadmin_config.py: it takes the user from the gateway's header, only from the gateway's address
and only with the shared secret the gateway adds (a static upstream header read from a file).

The sign-out hand-off (issue 18 item 1): pgAdmin keeps a session of its own, so without it, after
the gateway's sign-out and a sign-in as Bob, pgAdmin still shows Alice; with the gateway expiring
pgAdmin's cookie on sign-out (GATEWAY_SESSION__SIGN_OUT_APP_COOKIES), it shows Bob. Scripted (the
scripted client keeps cookies as a browser does; it ignores Clear-Site-Data, which only a real
browser applies, so the cookie setting is what this checks)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest
from support.browser import NAVIGATE, Browser
from support.gateway import PUBLIC_URL, idp_ssl
from support.ports import free_port
from support.recipes import AppEnv, AppProcess, app_env, gateway_in_front, recipe_file

VERSION: Final = "9.18"
SECRET_HEADER: Final = "X-Pgadmin-Webserver-Secret"
HAND_OFF: Final = {"sign_out_app_cookies": "pga4_session", "sign_out_clear_site_data": "cookies"}

pytestmark = [pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def pgadmin_env() -> AppEnv:
    return app_env("pgadmin4", VERSION)


@dataclass(frozen=True)
class PgAdmin:
    url: str
    secret_file: Path
    process: AppProcess


@pytest.fixture
def pgadmin(pgadmin_env: AppEnv, tmp_path: Path) -> Iterator[PgAdmin]:
    config = tmp_path / "pgadmin_config.py"
    config.write_text(recipe_file("pgadmin_config.py"), "utf-8")
    secret_file = tmp_path / "pgadmin-proxy-secret"
    secret_file.write_text(secrets.token_urlsafe(32) + "\n", "utf-8")
    port = free_port()
    server = AppProcess(
        [pgadmin_env.program("pgadmin4")],
        tmp_path / "pgadmin.log",
        env={
            "CONFIG_DISTRO_FILE_PATH": str(config),
            "PGADMIN_PORT": str(port),
            "PGADMIN_DATA_DIR": str(tmp_path / "pgadmin-data"),
            "PGADMIN_PROXY_SECRET_FILE": str(secret_file),
            # Server mode's first start makes an administrator account (internal, unused here).
            "PGADMIN_SETUP_EMAIL": "admin@contoso.example",
            "PGADMIN_SETUP_PASSWORD": secrets.token_urlsafe(16),
        },
        cwd=tmp_path,
    )
    server.wait_http(port, "/misc/ping", seconds=120)
    yield PgAdmin(f"http://127.0.0.1:{port}", secret_file, server)
    server.stop()


async def visit(browser: Browser, path: str) -> tuple[int, str, str]:
    """Follow redirects within the gateway, as a browser would: (status, final path, body)."""
    for _ in range(10):
        response = await browser.get(path, headers=NAVIGATE, read=False)
        body = await response.text()
        if response.status not in (301, 302, 303, 307, 308):
            return response.status, path, body
        path = browser.local(response.headers["Location"])[len(browser.gateway_url) :] or "/"
        assert path.startswith("/"), f"redirected off the gateway: {path}"
    raise AssertionError("too many redirects")


async def who_pgadmin_shows(browser: Browser) -> str:
    """The name pgAdmin's page shows in its user menu (its current_user script)."""
    status, _, body = await visit(browser, "/browser/")
    assert status == 200, (status, body[:500])
    status, _, script = await visit(browser, "/user_management/current_user.js")
    assert status == 200, (status, script[:500])
    found = re.search(r"'name': '([^']*)'", script)
    assert found is not None, script[:500]
    return found.group(1)


@pytest.mark.recipes
@pytest.mark.parametrize("hand_off", [True, False], ids=["with-hand-off", "without"])
async def test_pgadmin_follows_the_gateways_user(
    pgadmin: PgAdmin, idp: Any, hand_off: bool
) -> None:
    # pgAdmin itself believes the header only with the gateway's secret beside it.
    async with (
        aiohttp.ClientSession() as direct,
        direct.get(
            pgadmin.url + "/user_management/current_user.js",
            headers={"X-Forwarded-Preferred-Username": "alice@contoso.example"},
            allow_redirects=False,
        ) as forged,
    ):
        assert forged.status in (302, 401), forged.status
        assert "'name': 'alice'" not in await forged.text()
    with gateway_in_front(
        idp,
        pgadmin.url,
        public_url=PUBLIC_URL,
        session=HAND_OFF if hand_off else {},
        proxy={"upstream_header_files": {SECRET_HEADER: str(pgadmin.secret_file)}},
    ) as front:
        browser = Browser(front.url, PUBLIC_URL, idp_ssl(idp.ca_path))
        try:
            assert (await browser.sign_in("/browser/", "alice")).status == 302
            assert await who_pgadmin_shows(browser) == "alice"
            assert browser.cookie("pga4_session") is not None

            out = await browser.get("/.auth/logout")
            assert out.status == 302
            assert (await browser.sign_in("/browser/", "bob")).status == 302
            assert await who_pgadmin_shows(browser) == ("bob" if hand_off else "alice")
        finally:
            await browser.close()
