"""Rotating the cookie secret across replicas (docs/security.md, "Rotating the cookie secret"):
gateway processes sharing one real Redis go through the documented steps with a restart of one
replica at a time, as a rolling update does. No session is lost at any step; a record used during
the rotation is re-sealed with the new secret and survives the old one being dropped; one left
untouched since before the rotation reads as signed out (never a 500) once the old secret is gone.
"""

from __future__ import annotations

import secrets
from typing import Any, Final

import aiohttp
import pytest
from support.browser import API
from support.fixtures import assert_signed_out
from support.gateway import SESSION_COOKIE, GatewayProcess, session_cookie, settings_for
from support.threaded import ThreadedServer
from support.upstream import upstream_headers

S1: Final = secrets.token_urlsafe(32)
S2: Final = secrets.token_urlsafe(32)
# The documented steps: what each replica runs while the update rolls.
ONLY_S1: Final[dict[str, Any]] = {"cookie_secret": S1}
S2_NEXT: Final[dict[str, Any]] = {"cookie_secret": S1, "cookie_secret_next": S2}
S2_PROMOTED: Final[dict[str, Any]] = {"cookie_secret": S2, "cookie_secrets_previous": S1}
ONLY_S2: Final[dict[str, Any]] = {"cookie_secret": S2}


class Replicas:
    """Two gateway processes in front of one Redis, restarted one at a time on their ports."""

    def __init__(self, idp: Any, upstream: ThreadedServer, redis_url: str) -> None:
        self._idp, self._upstream, self._redis_url = idp, upstream, redis_url
        self.running: list[GatewayProcess] = []

    def _settings(self, ring: dict[str, Any]) -> Any:
        return settings_for(
            self._idp,
            self._upstream.url,
            session_store="redis",
            redis_url=self._redis_url,
            scopes="api://upstream/read",
            session={"cache_seconds": 0},  # every request reads the store: no copy hides a loss
            **ring,
        )

    async def start(self, *rings: dict[str, Any]) -> None:
        for ring in rings:
            self.running.append(await GatewayProcess(self._settings(ring)).ready())

    async def roll(self, index: int, ring: dict[str, Any]) -> None:
        """Replace one replica with one running `ring`, on the same port."""
        old = self.running[index]
        log = old.stop()
        assert old.returncode == 0, log
        assert "Traceback" not in log, log
        replacement = GatewayProcess(self._settings(ring), port=old.port)
        self.running[index] = await replacement.ready()

    def stop(self) -> None:
        for replica in self.running:
            log = replica.stop()
            assert "Traceback" not in log, log


async def works(client: aiohttp.ClientSession, url: str, cookie: str) -> None:
    async with client.get(
        url + "/whoami", headers={**API, "Cookie": f"{SESSION_COOKIE}={cookie}"}
    ) as response:
        body = await response.read()
        assert response.status == 200, (url, response.status, body[:300])
        seen = upstream_headers(await response.json())
        assert seen["x-ms-client-principal-name"] == ["alice@contoso.example"]


async def works_everywhere(
    client: aiohttp.ClientSession, replicas: Replicas, cookies: list[str]
) -> None:
    for cookie in cookies:
        for replica in replicas.running:
            await works(client, replica.url, cookie)


async def refreshes(client: aiohttp.ClientSession, url: str, cookie: str) -> None:
    """The session's token cache came along too: a forced refresh redeems its refresh token."""
    async with client.post(
        url + "/.auth/refresh", headers={**API, "Cookie": f"{SESSION_COOKIE}={cookie}"}
    ) as response:
        assert response.status == 200, (response.status, (await response.read())[:300])


@pytest.mark.timeout(180)
async def test_a_rolling_rotation_keeps_every_session_it_touches(
    idp: Any, upstream: ThreadedServer, redis_url: str
) -> None:
    replicas = Replicas(idp, upstream, redis_url)
    try:
        async with aiohttp.ClientSession() as client:
            # Before: both replicas on S1. One session is never used again.
            await replicas.start(ONLY_S1, ONLY_S1)
            untouched = await session_cookie(replicas.running[0].url, idp)
            before = [await session_cookie(r.url, idp) for r in replicas.running]

            # Step 1, rolling: S2 is announced as next on one replica, then the other.
            await replicas.roll(1, S2_NEXT)
            made = [await session_cookie(r.url, idp) for r in replicas.running]
            await works_everywhere(client, replicas, before + made)
            await replicas.roll(0, S2_NEXT)
            before += made

            # Step 2, rolling: S2 promoted, S1 previous. Mid-way the replicas disagree on which
            # secret seals; sessions made on either work on both.
            await replicas.roll(0, S2_PROMOTED)
            made = [await session_cookie(r.url, idp) for r in replicas.running]
            await works_everywhere(client, replicas, before + made)
            await replicas.roll(1, S2_PROMOTED)
            before += made
            await works_everywhere(client, replicas, before)  # re-sealed with S2 where needed

            # Step 3, rolling: S1 dropped.
            await replicas.roll(0, ONLY_S2)
            await works_everywhere(client, replicas, before)
            await replicas.roll(1, ONLY_S2)
            await works_everywhere(client, replicas, before)
            for cookie in before:
                await refreshes(client, replicas.running[0].url, cookie)

            # Sealed with S1 only and never used during the rotation: signed out, never a 500.
            for replica in replicas.running:
                await assert_signed_out(replica.url, client, untouched, "/whoami")
    finally:
        replicas.stop()


@pytest.mark.timeout(120)
async def test_a_moved_session_is_still_found_by_its_sid_after_the_old_secret_is_dropped(
    idp: Any, upstream: ThreadedServer, redis_url: str
) -> None:
    """Front-channel logout finds sessions by the provider's `sid`. The index entry is named with
    the cookie secret, so a session moved to S2 must take its `sid` entry along: once S1 is gone
    (dropped early, after a leak) the entry S1 named can no longer be found."""
    replicas = Replicas(idp, upstream, redis_url)
    try:
        async with aiohttp.ClientSession() as client:
            await replicas.start(S2_NEXT)
            idp.set_token_faults(id_token_claims={"sid": "sso-rotation-1"})
            cookie = await session_cookie(replicas.running[0].url, idp)
            idp.set_token_faults()
            await replicas.roll(0, S2_PROMOTED)
            await works(client, replicas.running[0].url, cookie)  # read, re-sealed and moved
            await replicas.roll(0, ONLY_S2)
            await works(client, replicas.running[0].url, cookie)

            url = replicas.running[0].url
            async with client.get(url + "/.auth/logout/frontchannel?sid=sso-rotation-1") as done:
                assert done.status == 200
            await assert_signed_out(url, client, cookie, "/whoami")
    finally:
        replicas.stop()
