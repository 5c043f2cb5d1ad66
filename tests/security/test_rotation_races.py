"""Cookie-secret rotation against sign-out (THREATS.md OA-11, F-15): a session record found under
a previous secret's name is moved under the current one on its next use. A sign-out (or an admin
revocation) on another replica that lands between that read and the move's write must stay a
sign-out: the old cookie must not sign anyone in again. Found in review: the move writes the new
name only if it is empty, without checking that the old record is still there, so the deleted
session comes back under the current name."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Final

import pytest

from gateway.sessions.sealing import Sealer
from gateway.sessions.store import SessionRecord, SessionStore
from gateway.store.memory import MemoryStorage

S1: Final = secrets.token_bytes(32)
S2: Final = secrets.token_bytes(32)
SESSION_ID: Final = "s" * 43


class _SignOutDuringMove(MemoryStorage):
    """The shared store: `meanwhile` runs once, as another replica's request arriving at that
    moment would: before the move's write of the new name ("write"), or after it and before the
    old name is taken ("take")."""

    meanwhile: Callable[[], Awaitable[None]] | None = None
    moment = "write"

    async def _step(self) -> None:
        step, self.meanwhile = self.meanwhile, None
        if step is not None:
            await step()

    async def replace(self, key: str, expected: bytes | None, value: bytes, ttl: float) -> bool:
        if expected is None and self.moment == "write":
            await self._step()
        return await super().replace(key, expected, value, ttl)

    async def take(self, key: str) -> bytes | None:
        if self.moment == "take":
            await self._step()
        return await super().take(key)


@pytest.mark.threat("OA-11")
@pytest.mark.parametrize("moment", ["write", "take"])
async def test_a_sign_out_during_a_move_stays_a_sign_out(moment: str) -> None:
    storage = _SignOutDuringMove()
    storage.moment = moment
    now = time.time()
    record = SessionRecord("oid.tid", "home", {"oid": "oid"}, now, now + 3600)
    # Signed in before the rotation: sealed and named with S1.
    await SessionStore(storage, Sealer(S1), 3600, time.time).save(SESSION_ID, record)

    # Replicas A and B both have S2 current and S1 previous; B signs the user out meanwhile
    # (deleting the session under every name its ring gives it).
    moving = SessionStore(storage, Sealer(S2, previous=(S1,)), 3600, time.time)
    signing_out = SessionStore(storage, Sealer(S2, previous=(S1,)), 3600, time.time)
    storage.meanwhile = lambda: signing_out.delete(SESSION_ID)

    await moving.load(SESSION_ID)  # the request in flight when the user signed out
    assert await moving.load(SESSION_ID) is None, "a signed-out session came back"
    assert await signing_out.load(SESSION_ID) is None, "a signed-out session came back"
