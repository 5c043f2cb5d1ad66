"""Open WebSockets and whose they are: a per-process registry of leases (THREATS.md HT-21, HT-15).

An HTTP request is judged when it arrives; a WebSocket is judged once, at its upgrade, and may run
for hours after. So every relayed WebSocket holds a lease, filed under the store key of its session
and under its user, and the relay (proxy/websocket.py) closes the socket when the lease ends:

- **the session changed**: a sign-out, revocation or front-channel logout made in this process
  ends the leases at once (SessionStore's change listeners); one made on another replica arrives
  through the notice feed (Redis pub/sub, the feed that keeps the session cache honest) and the
  session is read again. A changed record (a refresh) keeps its sockets.
- **the periodic check**: every `interval` (GATEWAY_SESSION__CACHE_SECONDS, the session cache's
  bound; 5 s when the cache is off) each session with open sockets is read from the store again.
  This catches idle expiry, which nobody announces, and any notice missed while the feed was
  down. A socket whose messages passed since the last check slides its session's idle TTL, as a
  request would; an open socket alone does not.
- **a deadline**: the session's absolute end, or an API client's token expiry.

These close with 1008 (policy violation) and an audit line (`websocket_closed`). A session that
cannot be checked (the store does not answer) for longer than two intervals closes with 1013 (try
again later): fail closed, as the HTTP path does, without cutting every socket on one lost read.

Leases are also what the caps count: at most `max_per_user` per user (429 before the upgrade) and
`slots` in all, the connections the gateway may open to the application (503 before the upgrade
instead of queueing for one without end).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final

from gateway.auth.identity import ApiCallerIdentity, Identity, SessionIdentity, audit
from gateway.errors import StoreUnavailable, TooManyRequests, UpstreamBusy
from gateway.sessions.store import SessionStore

log = logging.getLogger(__name__)

# The check interval when the session cache is off (its default bound).
CHECK_SECONDS_WITHOUT_CACHE: Final = 5.0
POLICY_VIOLATION: Final = 1008
TRY_AGAIN_LATER: Final = 1013


@dataclass(frozen=True, slots=True)
class Ending:
    """Why a lease ended: the close code and reason sent to both ends, and the audit reason."""

    code: int
    reason: str  # at most 123 bytes (RFC 6455 5.5): short words, never client input
    event: str


SESSION_ENDED: Final = Ending(POLICY_VIOLATION, "session ended", "session_ended")
SESSION_EXPIRED: Final = Ending(POLICY_VIOLATION, "session expired", "session_expired")
TOKEN_EXPIRED: Final = Ending(POLICY_VIOLATION, "token expired", "token_expired")
SESSION_UNCHECKED: Final = Ending(TRY_AGAIN_LATER, "session cannot be checked", "session_unchecked")


class SocketLease:
    """One open WebSocket's right to run. `ended` completes with the Ending when it must close;
    the relay calls `touch` for each message it passes. Release it (a `with` block) when the
    socket is gone."""

    def __init__(
        self,
        registry: SocketRegistry,
        user_key: str | None,
        key: str | None,
        *,
        ends_in: float | None = None,
        at_end: Ending = SESSION_EXPIRED,
    ) -> None:
        self._registry = registry
        self.user_key = user_key
        self.key = key  # the session's store key; None for API clients and anonymous sockets
        loop = asyncio.get_running_loop()
        self.ended: asyncio.Future[Ending] = loop.create_future()
        self.active = False  # a message passed since the last check
        # `ends_in` seconds from now (the session's absolute end, a token's expiry): `at_end`.
        self._timer = (
            None if ends_in is None else loop.call_later(max(0.0, ends_in), self.end, at_end)
        )

    def touch(self) -> None:
        self.active = True

    def end(self, ending: Ending) -> None:
        """End the lease (once): the relay closes the socket with `ending`."""
        if self.ended.done():
            return
        self.ended.set_result(ending)
        audit.info(
            "closing a WebSocket of %s: %s",
            self.user_key,
            ending.event,
            extra={"event": "websocket_closed", "user": self.user_key, "reason": ending.event},
        )

    def __enter__(self) -> SocketLease:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._registry.release(self)


@dataclass(slots=True)
class _Session:
    session_id: str
    leases: set[SocketLease] = field(default_factory=set)
    confirmed_at: float = field(default_factory=time.monotonic)


class SocketRegistry:
    """The open WebSockets of this process, by session and by user."""

    def __init__(
        self,
        sessions: SessionStore,
        *,
        interval: float,
        max_per_user: int,
        slots: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sessions = sessions
        self._interval = interval
        self._max_per_user = max_per_user
        self._slots = slots
        self._clock = clock
        self._by_session: dict[str, _Session] = {}
        self._per_user: dict[str, int] = {}
        self._open = 0
        self._checks: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self.following = False  # the notice feed is confirmed up

    def __len__(self) -> int:
        return self._open

    def open(self, identity: Identity | None) -> SocketLease:
        """A lease for a new WebSocket of `identity` (None: anonymous, on a public path).
        TooManyRequests past the user's cap, UpstreamBusy when every slot is taken."""
        if self._open >= self._slots:
            raise UpstreamBusy("every connection to the application is in use; try again shortly")
        user = identity.user_key if identity is not None else None
        if user is not None and self._per_user.get(user, 0) >= self._max_per_user:
            audit.warning(
                "WebSocket refused: %s has %d open",
                user,
                self._max_per_user,
                extra={"event": "websocket_refused", "user": user, "open": self._max_per_user},
            )
            raise TooManyRequests("too many open WebSockets; close some and try again")
        if isinstance(identity, SessionIdentity):
            key = self._sessions.key(identity.session_id)
            ends_in = identity.record.expires_at - self._clock()
            lease = SocketLease(self, user, key, ends_in=ends_in, at_end=SESSION_EXPIRED)
            self._by_session.setdefault(key, _Session(identity.session_id)).leases.add(lease)
        elif isinstance(identity, ApiCallerIdentity):
            ends_in = identity.expires_at - self._clock()
            lease = SocketLease(self, user, None, ends_in=ends_in, at_end=TOKEN_EXPIRED)
        else:
            lease = SocketLease(self, None, None)
        self._open += 1
        if user is not None:
            self._per_user[user] = self._per_user.get(user, 0) + 1
        return lease

    def release(self, lease: SocketLease) -> None:
        """The socket of `lease` is gone (the lease's `with` block calls this)."""
        self._open -= 1
        if lease.user_key is not None:
            left = self._per_user[lease.user_key] - 1
            if left:
                self._per_user[lease.user_key] = left
            else:
                del self._per_user[lease.user_key]
        if lease.key is not None:
            session = self._by_session[lease.key]
            session.leases.discard(lease)
            if not session.leases:
                del self._by_session[lease.key]

    def changed(self, key: str, gone: bool = False) -> None:
        """The session under store `key` changed: `gone` (deleted here) ends its sockets at once;
        otherwise (a notice, or a write) it is read again soon."""
        session = self._by_session.get(key)
        if session is None:
            return
        if gone:
            self._end(session, SESSION_ENDED)
            return
        if key in self._checks:  # the check in flight may have read before this change
            self._again.add(key)
            return
        self._checks[key] = asyncio.get_running_loop().create_task(self._check_soon(key))

    def feed_changed(self, following: bool) -> None:
        """The notice feed came back: notices may have been missed, so read every session again
        (while it is down, the periodic check bounds the delay)."""
        self.following = following
        if following:
            for key in list(self._by_session):
                self.changed(key)

    async def run(self) -> None:
        """The periodic check, until cancelled: every session with open sockets once per round,
        the round spread over the interval rather than run in one burst, so that thousands of
        sockets never hold the event loop for long at a time."""
        while True:
            keys = list(self._by_session)
            if not keys:
                await asyncio.sleep(self._interval)
                continue
            gap = self._interval / len(keys)
            for key in keys:
                await asyncio.sleep(gap)
                await self._check(key)

    async def close(self) -> None:
        for task in list(self._checks.values()):
            task.cancel()
        await asyncio.gather(*self._checks.values(), return_exceptions=True)

    async def _check_soon(self, key: str) -> None:
        try:
            while True:
                self._again.discard(key)
                await self._check(key)
                if key not in self._again:
                    return
        finally:
            del self._checks[key]

    async def _check(self, key: str) -> None:
        session = self._by_session.get(key)
        if session is None:
            return
        active = any(lease.active for lease in session.leases)
        for lease in session.leases:
            lease.active = False
        try:
            stored = await self._sessions.stored(session.session_id, slide=active)
        except StoreUnavailable:
            if time.monotonic() - session.confirmed_at > 2 * self._interval:
                self._end(session, SESSION_UNCHECKED)
            else:
                log.warning("an open WebSocket's session could not be checked; trying again")
            return
        except Exception:  # never let one session's surprise stop the checks of the others
            log.exception("an open WebSocket's session check failed")
            return
        session.confirmed_at = time.monotonic()
        if not stored:
            self._end(session, SESSION_ENDED)

    def _end(self, session: _Session, ending: Ending) -> None:
        for lease in list(session.leases):
            lease.end(ending)
