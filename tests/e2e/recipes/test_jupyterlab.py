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
import io
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
                "JUPYTER_DATA_DIR": str(home / "data"),
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
def test_jupyterlab_in_chromium(jupyter: Jupyter, idp: Any, chromium: Any, tmp_path: Path) -> None:
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


# ---- scripted ----


async def signed_in_browser(front: Front, idp: Any, user: str = "alice") -> Browser:
    browser = Browser(front.url, PUBLIC_URL, idp_ssl(idp.ca_path))
    response = await browser.sign_in("/lab", user)
    assert response.status == 302, response.status
    lab = await browser.get("/lab")  # JupyterLab's page sets the _xsrf cookie
    assert lab.status == 200, lab.status
    return browser


def xsrf(browser: Browser) -> dict[str, str]:
    """What JupyterLab sends with every change: its _xsrf cookie's value in X-XSRFToken, and
    the page's own origin."""
    token = browser.cookie("_xsrf")
    assert token is not None, "Jupyter set no _xsrf cookie"
    return {**API, "X-XSRFToken": token, "Origin": PUBLIC_URL, "Referer": PUBLIC_URL + "/lab"}


async def upload(browser: Browser, name: str, data: bytes) -> None:
    """As JupyterLab uploads a large file: base64 chunks numbered 1, 2, ..., the last one -1."""
    chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)]
    for number, chunk in enumerate(chunks, start=1):
        model = {
            "type": "file",
            "format": "base64",
            "name": name,
            "content": base64.b64encode(chunk).decode(),
            "chunk": -1 if number == len(chunks) else number,
        }
        body = io.BytesIO(json.dumps(model).encode())  # a stream: aiohttp warns of large bytes
        async with browser.session.put(
            browser.local(f"/api/contents/{name}"),
            data=body,
            headers={**xsrf(browser), "Content-Type": "application/json"},
        ) as response:
            assert response.status in (200, 201), (number, response.status, await response.text())


@pytest.mark.recipes
async def test_jupyter_api_kernel_websocket_and_50_mib(
    jupyterlab: AppEnv, idp: Any, tmp_path: Path
) -> None:
    jupyter = Jupyter(jupyterlab, tmp_path)
    try:
        with gateway_in_front(
            idp, jupyter.url, public_url=PUBLIC_URL, proxy={"claim_headers": CLAIM_HEADERS}
        ) as front:
            browser = await signed_in_browser(front, idp)
            try:
                await scripted_session(browser)
            finally:
                await browser.close()
    finally:
        jupyter.process.stop()


async def scripted_session(browser: Browser) -> None:
    me = await browser.session.get(browser.local("/api/me"), headers=API)
    assert (await me.json())["identity"]["username"] == "alice@contoso.example"

    # Jupyter's own XSRF check works through the gateway: a change without the header is
    # refused by Jupyter, with it accepted.
    bare = await browser.session.post(browser.local("/api/kernels"), json={}, headers=API)
    assert bare.status == 403, bare.status
    made = await browser.session.post(
        browser.local("/api/kernels"), json={"name": "python3"}, headers=xsrf(browser)
    )
    assert made.status == 201, await made.text()
    kernel = (await made.json())["id"]

    # The kernel's WebSocket, with the subprotocol JupyterLab asks for, chosen by Jupyter and
    # passed back by the gateway.
    async with browser.session.ws_connect(
        browser.local(f"/api/kernels/{kernel}/channels"),
        protocols=(SUBPROTOCOL,),
        headers={"Origin": PUBLIC_URL},
    ) as ws:
        assert ws.protocol == SUBPROTOCOL
        assert await run_in_kernel(ws, "print(6 * 7)") == "42\n"

    # 50 MiB up in JupyterLab's chunks, and down again from /files/, byte for byte.
    data = os.urandom(UPLOAD_BYTES)
    await upload(browser, "big.bin", data)
    download = hashlib.sha256()
    async with browser.session.get(
        browser.local("/files/big.bin"), headers={"Referer": PUBLIC_URL + "/lab"}
    ) as response:
        assert response.status == 200, response.status
        async for block in response.content.iter_chunked(1 << 20):
            download.update(block)
    assert download.hexdigest() == hashlib.sha256(data).hexdigest()


@pytest.mark.recipes
async def test_jupyters_own_checks_what_the_recipe_settings_are_for(
    jupyterlab: AppEnv, idp: Any, tmp_path: Path
) -> None:
    """Issue 18 item 4, verified: without allow_remote_access Jupyter refuses the public Host
    the gateway passes on; with the Host not preserved, Jupyter's cross-origin check refuses
    the browser's WebSockets, changes and downloads (the Origin is the public one, the Host
    Jupyter's own)."""
    jupyter = Jupyter(jupyterlab, tmp_path, "--ServerApp.allow_remote_access=False")
    try:
        with gateway_in_front(idp, jupyter.url, public_url=PUBLIC_URL) as front:
            browser = Browser(front.url, PUBLIC_URL, idp_ssl(idp.ca_path))
            try:
                assert (await browser.sign_in("/lab")).status == 302
                refused = await browser.get("/lab")
                assert refused.status == 403
                assert "Blocking request with non-local 'Host' app.test" in jupyter.process.output()
            finally:
                await browser.close()

        with gateway_in_front(
            idp, jupyter.url, public_url=PUBLIC_URL, proxy={"preserve_host": False}
        ) as front:
            browser = await signed_in_browser(front, idp)
            try:
                await cross_origin_refusals(browser, jupyter)
            finally:
                await browser.close()
    finally:
        jupyter.process.stop()


async def cross_origin_refusals(browser: Browser, jupyter: Jupyter) -> None:
    # A browser's change carries the public Origin, which no longer matches the Host.
    made = await browser.session.post(
        browser.local("/api/kernels"), json={"name": "python3"}, headers=xsrf(browser)
    )
    assert made.status == 404, made.status  # how Jupyter answers a refused cross-origin change
    assert "Blocking Cross Origin API request" in jupyter.process.output()
    # A script sends no Origin, so Jupyter lets it start a kernel...
    no_origin = {k: v for k, v in xsrf(browser).items() if k != "Origin"}
    made = await browser.session.post(
        browser.local("/api/kernels"), json={"name": "python3"}, headers=no_origin
    )
    assert made.status == 201, made.status
    kernel = (await made.json())["id"]
    # ...but the browser cannot reach it: its WebSocket is refused for its Origin,
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await browser.session.ws_connect(
            browser.local(f"/api/kernels/{kernel}/channels"),
            protocols=(SUBPROTOCOL,),
            headers={"Origin": PUBLIC_URL},
        )
    assert refused.value.status == 403, refused.value.status
    assert "Blocking Cross Origin WebSocket Attempt" in jupyter.process.output()
    # and so is a download, for its Referer.
    (jupyter.root / "small.txt").write_text("hello", "utf-8")
    download = await browser.get("/files/small.txt", headers={"Referer": PUBLIC_URL + "/lab"})
    assert download.status == 403, download.status
