"""JupyterLab behind the gateway (docs/recipes.md#jupyterlab): JupyterLab from PyPI in its own
virtualenv, configured by the page's own jupyter_server_config.py, behind a gateway process.

In Chromium: sign in, run a notebook cell printing 42, see who Jupyter thinks you are, sign out,
sign in as someone else and be them. Scripted: the REST API with Jupyter's XSRF cookie and header,
the kernel WebSocket with the v1.kernel.websocket.jupyter.org subprotocol negotiated end to end,
and 50 MiB up and down with matching hashes. And the two claims the page makes about Jupyter's own
checks (issue 18 item 4): a public Host needs allow_remote_access, and a gateway that does not
preserve the Host breaks Jupyter's cross-origin check for WebSockets, API calls and downloads.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest
from support.browser import API, Browser
from support.gateway import PUBLIC_URL, idp_ssl
from support.ports import free_port
from support.recipes import AppEnv, AppProcess, Front, app_env, gateway_in_front, recipe_file
from support.recipes_browser import Steps

VERSION: Final = "4.6.6"
SUBPROTOCOL: Final = "v1.kernel.websocket.jupyter.org"
CLAIM_HEADERS: Final = {"X-User-Name": "name"}
UPLOAD_BYTES: Final = 50 * 1024 * 1024
CHUNK_BYTES: Final = 1024 * 1024  # JupyterLab's own upload chunk
NOTEBOOK: Final = {
    "cells": [
        {
            "cell_type": "code",
            "execution_count": None,
            "id": "answer",
            "metadata": {},
            "outputs": [],
            "source": ["print(6 * 7)"],
        }
    ],
    "metadata": {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}
    },
    "nbformat": 4,
    "nbformat_minor": 5,
}

pytestmark = [pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def jupyterlab() -> AppEnv:
    return app_env("jupyterlab", VERSION)


class Jupyter:
    """A JupyterLab server on loopback, run with the recipe's configuration file."""

    def __init__(self, env: AppEnv, directory: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.root = directory / "notebooks"
        self.root.mkdir()
        config = directory / "jupyter_server_config.py"
        config.write_text(recipe_file("jupyter_server_config.py"), "utf-8")
        home = directory / "jupyter-home"
        self.process = AppProcess(
            [
                env.program("jupyter"),
                "lab",
                f"--config={config}",
                f"--ServerApp.port={self.port}",
                f"--ServerApp.root_dir={self.root}",
                "--allow-root",  # CI runs the suite as root
                "--LabApp.extension_manager=readonly",  # no look-ups on PyPI
                *extra,
            ],
            directory / "jupyterlab.log",
            env={
                "JUPYTER_CONFIG_DIR": str(home / "config"),
                "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
                "IPYTHONDIR": str(home / "ipython"),
            },
        )
        self.process.wait_http(self.port, "/api/status")


@pytest.fixture
def jupyter(jupyterlab: AppEnv, tmp_path: Path) -> Iterator[Jupyter]:
    server = Jupyter(jupyterlab, tmp_path)
    yield server
    server.process.stop()


# ---- the kernel protocol over a WebSocket, v1 framing (jupyter_server's docs describe it) ----


def v1_frame(channel: str, parts: list[bytes]) -> bytes:
    """One message: the count of offsets, the offsets (little-endian 64-bit), then the channel
    name and the parts (header, parent header, metadata, content) they point at."""
    name = channel.encode()
    offsets = [8 * (len(parts) + 3)]
    for piece in (name, *parts):
        offsets.append(offsets[-1] + len(piece))
    head = len(offsets).to_bytes(8, "little") + b"".join(o.to_bytes(8, "little") for o in offsets)
    return head + name + b"".join(parts)


def v1_unframe(data: bytes) -> tuple[str, list[dict[str, Any]]]:
    count = int.from_bytes(data[:8], "little")
    offsets = [int.from_bytes(data[8 * (i + 1) : 8 * (i + 2)], "little") for i in range(count)]
    channel = data[offsets[0] : offsets[1]].decode()
    parts = [data[offsets[i] : offsets[i + 1]] for i in range(1, min(count - 1, 5))]
    return channel, [json.loads(part) for part in parts]


def execute_request(code: str) -> bytes:
    header = {
        "msg_id": uuid.uuid4().hex,
        "session": uuid.uuid4().hex,
        "username": "",
        "msg_type": "execute_request",
        "version": "5.3",
        "date": "2026-01-01T00:00:00Z",
    }
    content = {"code": code, "silent": False, "store_history": False, "allow_stdin": False}
    parts = [json.dumps(p).encode() for p in (header, {}, {}, content)]
    return v1_frame("shell", parts)


async def run_in_kernel(ws: aiohttp.ClientWebSocketResponse, code: str) -> str:
    """Execute `code`; what it printed on stdout."""
    await ws.send_bytes(execute_request(code))
    printed = ""
    while True:
        message = await ws.receive(timeout=60)
        assert message.type == aiohttp.WSMsgType.BINARY, message
        channel, (header, _parent, _metadata, content) = v1_unframe(message.data)
        if channel == "iopub" and header["msg_type"] == "stream":
            printed += content["text"]
        if channel == "shell" and header["msg_type"] == "execute_reply":
            assert content["status"] == "ok", content
            return printed


# ---- in Chromium ----


def run_first_cell(steps: Steps) -> None:
    """Once the kernel is up, run the notebook's selected (first) cell from the toolbar."""
    steps.wait_for(".jp-Notebook .jp-Cell .cm-content", "print(6 * 7)")
    steps.wait_for("#jp-main-statusbar", "| Idle")
    steps.wait_for('[data-command="notebook:run-cell-and-select-next"]').click()


def who_jupyter_sees(steps: Steps, front: Front) -> dict[str, Any]:
    steps.driver.get(front.url + "/api/me")
    identity: dict[str, Any] = json.loads(steps.body_text())["identity"]
    return identity


@pytest.mark.recipes(quick=True)
def test_jupyterlab_in_chromium(
    jupyter: Jupyter, idp: Any, chromium: Any, tmp_path: Path
) -> None:
    (jupyter.root / "answer.ipynb").write_text(json.dumps(NOTEBOOK), "utf-8")
    steps = Steps(chromium, tmp_path)
    with gateway_in_front(idp, jupyter.url, proxy={"claim_headers": CLAIM_HEADERS}) as front:
        chromium.get(front.url + "/lab/tree/answer.ipynb")
        steps.sign_in_as("alice")
        run_first_cell(steps)
        output = steps.wait_for(".jp-OutputArea-output", "42")
        assert output.text.strip() == "42"
        steps.shoot("alice-ran-a-cell", keep_as="jupyterlab-42.png")
        identity = who_jupyter_sees(steps, front)
        assert (identity["username"], identity["name"]) == (
            "alice@contoso.example",
            "Alice Example",
        )

        chromium.get(front.url + "/.auth/logout")
        steps.wait_for("h1", "You have signed out")
        chromium.get(front.url + "/lab/tree/answer.ipynb")
        steps.sign_in_as("bob")
        run_first_cell(steps)
        steps.wait_for(".jp-OutputArea-output", "42")
        steps.shoot("bob-signed-in", keep_as="jupyterlab-bob.png")
        identity = who_jupyter_sees(steps, front)
        assert (identity["username"], identity["name"]) == ("bob@contoso.example", "Bob Builder")
        steps.shoot("bob-is-who-jupyter-sees", keep_as="jupyterlab-api-me-bob.png")
    assert len(steps.shots) == 3
