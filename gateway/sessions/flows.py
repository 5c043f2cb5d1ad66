"""Pending sign-ins: the MSAL auth-code flow saved server-side under a digest of its `state`.

A flow is single use (taken atomically), expires after the sign-in window, and is bound to the
browser that started it by a keyed digest of a short-lived cookie, so a callback URL replayed or
planted in another browser signs no one in. It holds the PKCE verifier and nonce, so it is sealed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from gateway.errors import CorruptRecordError, StoreUnavailable
from gateway.sessions.sealed_list import SealedList
from gateway.sessions.sealing import Sealer
from gateway.store.storage import Storage

FLOW_PREFIX: Final = "gw:flow:"
BROWSER_PREFIX: Final = "gw:flows-of:"  # + the browser binding digest (already keyed)


@dataclass(frozen=True, slots=True)
class PendingSignIn:
    msal_flow: dict[str, Any]  # initiate_auth_code_flow's dict without auth_uri
    return_to: str  # a validated same-origin path
    browser_binding: str  # Sealer.binding() of the sign-in cookie value
    scopes: tuple[str, ...] = ()  # what the flow asked for; its token is stored under them

    def encode(self) -> bytes:
        # Field by field, not dataclasses.asdict, which deep-copies the flow first.
        data = {
            "msal_flow": self.msal_flow,
            "return_to": self.return_to,
            "browser_binding": self.browser_binding,
            "scopes": self.scopes,
        }
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> PendingSignIn:
        try:
            data = json.loads(raw)
            scopes = data.get("scopes", [])
            if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
                raise TypeError("scopes must be a list of strings")
            data["scopes"] = tuple(scopes)
            pending = cls(**data)
            if not isinstance(pending.msal_flow, dict) or not all(
                isinstance(getattr(pending, name), str) for name in ("return_to", "browser_binding")
            ):
                raise TypeError("pending sign-in has the wrong shape")
            return pending
        except (ValueError, TypeError, AttributeError) as exc:
            raise CorruptRecordError("pending sign-in record does not parse") from exc


class FlowStore:
    def __init__(
        self, storage: Storage, sealer: Sealer, ttl: float, *, max_per_browser: int
    ) -> None:
        self._storage = storage
        self._sealer = sealer
        self._ttl = ttl
        self._max_per_browser = max_per_browser
        self._browsers = SealedList(storage, sealer)

    def _key(self, state: str) -> str:
        return FLOW_PREFIX + self._sealer.digest(state)

    async def save(self, state: str, pending: PendingSignIn) -> None:
        """Keep the pending sign-in; a browser with too many drops its oldest (bounded store)."""
        key = self._key(state)
        await self._storage.set(key, self._sealer.seal(key, pending.encode()), self._ttl)
        try:
            dropped = await self._browsers.append(
                BROWSER_PREFIX + pending.browser_binding,
                state,
                ttl=self._ttl,
                limit=self._max_per_browser,
            )
        except StoreUnavailable:
            await self._storage.delete(key)  # uncounted, it would escape the cap
            raise
        for old in dropped:  # one key per call: fine for Redis Cluster too
            await self._storage.delete(self._key(old))

    async def take(self, state: str) -> PendingSignIn | None:
        """The pending sign-in for `state`, removed so that it can be used only once; None when
        there is none (unknown, expired or already used). CorruptRecordError if it will not open."""
        key = self._key(state)
        sealed = await self._storage.take(key)
        if sealed is None and self._sealer.rotating:
            # Started on a replica with another current cookie secret (a rotation under way).
            for name, _ in self._sealer.older_digests(state):
                key = FLOW_PREFIX + name
                sealed = await self._storage.take(key)
                if sealed is not None:
                    break
        if sealed is None:
            return None
        return PendingSignIn.decode(self._sealer.open(key, sealed))
