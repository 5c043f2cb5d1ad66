"""Gradio behind the gateway (docs/recipes.md#gradio): Gradio from PyPI in its own virtualenv runs
the page's own gradio_app.py. Scripted, as Gradio's own client does it: the page loads, a call is
queued (POST), and its result streams back as server-sent events through the gateway, carrying
the signed-in user's name from the gateway's header; without a session, no call is queued."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from support.browser import API, NAVIGATE, Browser
from support.gateway import PUBLIC_URL, idp_ssl
from support.ports import free_port
from support.recipes import AppEnv, AppProcess, app_env, gateway_in_front, recipe_file

VERSION: Final = "6.31.0"
CLAIM_HEADERS: Final = {"X-User-Name": "name"}

pytestmark = [pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def gradio_env() -> AppEnv:
    return app_env("gradio", VERSION)


@pytest.fixture
def gradio(gradio_env: AppEnv, tmp_path: Path) -> Iterator[str]:
    script = tmp_path / "gradio_app.py"
    script.write_text(recipe_file("gradio_app.py"), "utf-8")
    port = free_port()
    server = AppProcess(
        [gradio_env.python, str(script)],
        tmp_path / "gradio.log",
        env={"GRADIO_SERVER_PORT": str(port), "HOME": str(tmp_path)},
        cwd=tmp_path,
    )
    server.wait_http(port, "/", seconds=120)
    yield f"http://127.0.0.1:{port}"
    server.stop()


def sse_events(text: str) -> list[tuple[str, Any]]:
    """(event, data) of a text/event-stream body."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((fields.get("event", ""), json.loads(fields.get("data", "null"))))
    return events


@pytest.mark.recipes
async def test_gradio_queue_round_trip(gradio: str, idp: Any) -> None:
    with gateway_in_front(
        idp, gradio, public_url=PUBLIC_URL, proxy={"claim_headers": CLAIM_HEADERS}
    ) as front:
        browser = Browser(front.url, PUBLIC_URL, idp_ssl(idp.ca_path))
        try:
            refused = await browser.session.post(
                browser.local("/gradio_api/call/greet"), json={"data": ["hi"]}, headers=API
            )
            assert refused.status == 401

            assert (await browser.sign_in("/", "alice")).status == 302
            page = await browser.get("/", headers=NAVIGATE)
            assert page.status == 200
            assert "gradio" in (await page.text()).lower()

            queued = await browser.session.post(
                browser.local("/gradio_api/call/greet"), json={"data": ["hi"]}, headers=API
            )
            assert queued.status == 200, await queued.text()
            event_id = (await queued.json())["event_id"]
            async with browser.session.get(
                browser.local(f"/gradio_api/call/greet/{event_id}"),
                headers={"Accept": "text/event-stream"},
            ) as stream:
                assert stream.status == 200
                assert stream.headers["Content-Type"].startswith("text/event-stream")
                events = sse_events(await stream.text())
            assert events[-1] == ("complete", ["Hello Alice Example, you said: hi"]), events
        finally:
            await browser.close()
