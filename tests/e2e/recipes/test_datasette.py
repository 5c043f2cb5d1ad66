"""Datasette behind the gateway (docs/recipes.md#datasette): a plain HTTP application, its HTML
pages for people and its JSON API for scripts, from PyPI in its own virtualenv, behind a gateway
process. Scripted: a signed-in person sees a table page and reads the same rows as JSON; an API
client without a session gets 401 and a browser a redirect to sign in, never the data."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from support.browser import API, NAVIGATE, Browser
from support.gateway import PUBLIC_URL, idp_ssl
from support.ports import free_port
from support.recipes import AppEnv, AppProcess, app_env, gateway_in_front

VERSION: Final = "0.65.5"
ROWS: Final = [(1, "Train to Leeds", 87.5), (2, "Hotel, two nights", 240.0)]

pytestmark = [pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def datasette_env() -> AppEnv:
    return app_env("datasette", VERSION)


@pytest.fixture
def datasette(datasette_env: AppEnv, tmp_path: Path) -> Iterator[str]:
    database = tmp_path / "expenses.db"
    with sqlite3.connect(database) as connection:
        connection.execute("create table claims (id integer primary key, what text, amount real)")
        connection.executemany("insert into claims values (?, ?, ?)", ROWS)
    connection.close()
    port = free_port()
    server = AppProcess(
        [
            datasette_env.program("datasette"),
            "serve",
            str(database),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        tmp_path / "datasette.log",
    )
    server.wait_http(port, "/-/versions.json")
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.mark.recipes(quick=True)
async def test_datasette_pages_and_json_api(datasette: str, idp: Any) -> None:
    with gateway_in_front(idp, datasette, public_url=PUBLIC_URL) as front:
        browser = Browser(front.url, PUBLIC_URL, idp_ssl(idp.ca_path))
        try:
            # Signed out: a browser is sent to sign in, a script gets 401, neither gets data.
            assert (await browser.get("/expenses/claims")).status == 302
            refused = await browser.get("/expenses/claims.json", headers=API)
            assert refused.status == 401

            assert (await browser.sign_in("/expenses/claims")).status == 302
            page = await browser.get("/expenses/claims", headers=NAVIGATE)
            assert page.status == 200
            html = await page.text()
            assert "Train to Leeds" in html and "Hotel, two nights" in html

            api = await browser.get("/expenses/claims.json?_shape=array", headers=API)
            assert api.status == 200
            assert [(r["id"], r["what"], r["amount"]) for r in await api.json()] == ROWS
            versions = await browser.get("/-/versions.json", headers=API)
            assert (await versions.json())["datasette"]["version"] == VERSION
        finally:
            await browser.close()
