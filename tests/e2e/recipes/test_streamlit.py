"""Streamlit behind the gateway (docs/recipes.md#streamlit), in Chromium: Streamlit from PyPI in
its own virtualenv runs the page's own streamlit_app.py, which greets the signed-in user by the
name in a header (st.context.headers) over its WebSocket. Sign in as Alice, use the app, sign
out, sign in as Bob, and be greeted as Bob."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from support.ports import free_port
from support.recipes import AppEnv, AppProcess, app_env, gateway_in_front, recipe_file
from support.recipes_browser import Steps

VERSION: Final = "1.67.0"
CLAIM_HEADERS: Final = {"X-User-Name": "name"}

pytestmark = [pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def streamlit_env() -> AppEnv:
    return app_env("streamlit", VERSION)


def streamlit_command(env: AppEnv, script: Path, port: int) -> list[str]:
    """The recipe's command line, on a port of the test's choosing."""
    return [
        env.program("streamlit"),
        "run",
        str(script),
        "--server.address=127.0.0.1",
        f"--server.port={port}",
        "--server.headless=true",
        "--browser.gatherUsageStats=false",
    ]


@pytest.fixture
def streamlit(streamlit_env: AppEnv, tmp_path: Path) -> Iterator[str]:
    script = tmp_path / "streamlit_app.py"
    script.write_text(recipe_file("streamlit_app.py"), "utf-8")
    port = free_port()
    server = AppProcess(
        streamlit_command(streamlit_env, script, port),
        tmp_path / "streamlit.log",
        env={"HOME": str(tmp_path)},  # Streamlit keeps a credentials file under ~/.streamlit
        cwd=tmp_path,
    )
    server.wait_http(port, "/_stcore/health")
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.mark.recipes
def test_streamlit_in_chromium(streamlit: str, idp: Any, chromium: Any, tmp_path: Path) -> None:
    steps = Steps(chromium, tmp_path)
    with gateway_in_front(idp, streamlit, proxy={"claim_headers": CLAIM_HEADERS}) as front:
        chromium.get(front.url + "/")
        steps.sign_in_as("alice")
        steps.wait_for("h1", "Hello, Alice Example")
        steps.wait_for("p", "Signed in as alice@contoso.example")
        steps.wait_for("button", "Count").click()
        steps.wait_for("p", "Counted 1 times")
        steps.shoot("alice", keep_as="streamlit-alice.png")

        chromium.get(front.url + "/.auth/logout")
        steps.wait_for("h1", "You have signed out")
        chromium.get(front.url + "/")
        steps.sign_in_as("bob")
        steps.wait_for("h1", "Hello, Bob Builder")
        steps.wait_for("p", "Signed in as bob@contoso.example")
        steps.wait_for("p", "Counted 0 times")  # a new Streamlit session: Alice's state is gone
        steps.shoot("bob", keep_as="streamlit-bob.png")
    assert len(steps.shots) == 2
