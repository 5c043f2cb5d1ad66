"""The admin token in a file (GATEWAY_ADMIN__TOKEN_FILE) rotated while a real gateway process runs:
rewritten in place, or swapped the way the kubelet updates a mounted Secret. After the change the
old token is refused and the new one accepted, with no restart; a replacement too short to be a
token, or a file removed, refuses every admin call (503, an error in the log naming the setting)
until it is fixed: fail closed, never the old token still working."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.gateway import GatewayProcess, LogTail, session_cookie, settings_for
from support.idp import ALICE_OID
from support.secret_files import KubeletVolume, rewrite_in_place
from support.served import stop_gateway
from support.threaded import ThreadedServer

from gateway.oidc.credential_files import MIN_CHECK_SECONDS


class Admin:
    """A gateway process with its admin token in a file, and a client for /.auth/admin/revoke."""

    def __init__(self, process: GatewayProcess, log: LogTail) -> None:
        self.process, self.log = process, log

    async def revoke(self, token: str, user: str = ALICE_OID) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as client,
            client.post(
                self.process.url + "/.auth/admin/revoke",
                json={"user": user},
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            ) as response,
        ):
            return response.status, await response.json()


async def changed(update: Callable[[str], None], text: str) -> None:
    """Change the file, then let the once-a-second check come due: the next call looks."""
    update(text)
    await asyncio.sleep(MIN_CHECK_SECONDS + 0.2)


@pytest.fixture(params=["in place", "kubelet"])
def token_file(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, Any]]:
    """The file holding the first token, and how to change it."""
    first = secrets.token_urlsafe(32)
    if request.param == "kubelet":
        volume = KubeletVolume(tmp_path, "admin-token", first)
        yield volume.path, volume.update
    else:
        path = tmp_path / "admin-token"
        path.write_text(first + "\n")
        yield path, lambda text: rewrite_in_place(path, text)


async def test_a_rotated_admin_token_file_applies_without_a_restart(
    idp: Any, upstream: ThreadedServer, token_file: tuple[Path, Any]
) -> None:
    path, update = token_file
    first = path.read_text().strip()
    process = GatewayProcess(settings_for(idp, upstream.url, admin={"token_file": path}))
    log = LogTail(process.process)
    try:
        await process.ready()
        admin = Admin(process, log)
        assert (await admin.revoke(first))[0] == 200
        assert (await admin.revoke("not-" + first))[0] == 401

        second = secrets.token_urlsafe(32)
        await changed(update, second + "\n")
        await session_cookie(process.url, idp)  # a session for the new token to end
        assert await admin.revoke(second) == (200, {"revoked": 1})
        assert (await admin.revoke(first))[0] == 401  # the old token no longer works
        assert log.wait_for(b"GATEWAY_ADMIN__TOKEN_FILE changed")

        # Too short to be a token: every admin call is refused, the old token and the bad one.
        await changed(update, "short\n")
        for token in (second, "short"):
            status, body = await admin.revoke(token)
            assert (status, body["error"]) == (503, "admin_unavailable")
        assert log.wait_for(b"GATEWAY_ADMIN__TOKEN_FILE: ")
        assert b"holds 5 character(s)" in log.raw()

        third = secrets.token_urlsafe(32)
        await changed(update, third + "\n")  # fixed: the new token works, nothing older does
        assert (await admin.revoke(third))[0] == 200
        assert (await admin.revoke(second))[0] == 401

        path.unlink()  # gone is not "keep the last token" either
        await asyncio.sleep(MIN_CHECK_SECONDS + 0.2)
        assert (await admin.revoke(third))[0] == 503
        for token in (first, second, third):
            assert token.encode() not in log.raw()  # tokens are never logged
    finally:
        stop_gateway(process, log)
    assert "Traceback" not in log.raw().decode(errors="replace")
