"""Signed-in sessions: the record, and the store that keeps it sealed under a digest of the cookie.

A session record holds what the hot path needs without touching MSAL: the principal's claims, the
lifetimes, and the current upstream access token with the time it is due for refresh. The MSAL
token cache itself lives apart (sessions/token_cache.py) and is read only on the sign-in and
refresh paths. Cookies are auth/cookies.py's business.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Final

from gateway.errors import CorruptRecordError, StoreUnavailable
from gateway.sessions.cache import SessionCache
from gateway.sessions.sealing import Sealer
from gateway.store.storage import Clock, Notices, Storage

log = logging.getLogger(__name__)

SESSION_PREFIX: Final = "gw:session:"
FORMAT_VERSION: Final = 1
MAX_SID_LENGTH: Final = 256  # as front-channel logout accepts (endpoints/signin.py)
# Protocol and bookkeeping claims of an id_token that mean nothing to the upstream.
_DROPPED_CLAIMS: Final = frozenset({"nonce", "aio", "rh", "uti", "c_hash", "at_hash", "sid"})


def session_claims(
    id_token_claims: dict[str, Any], previous: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The claims a session keeps from a verified id_token. Groups resolved earlier (because the
    token only carried the overage marker) are kept when a newer token carries the marker too."""
    claims = {k: v for k, v in id_token_claims.items() if k not in _DROPPED_CLAIMS}
    if previous and "groups" not in claims and "groups" in previous and "_claim_names" in claims:
        claims["groups"] = previous["groups"]
    return claims


def scope_key(scopes: tuple[str, ...]) -> str:
    """The key a token for these scopes is kept under in a session record."""
    return " ".join(scopes)


@dataclass(frozen=True, slots=True)
class UpstreamToken:
    """An access token for one set of scopes. Times are epoch seconds."""

    access_token: str
    expires_at: float
    refresh_at: float  # when it is due for renewal (ahead of expiry)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One signed-in browser session. Times are epoch seconds."""

    user_key: str  # oid.tid for Entra, iss|sub otherwise: never an email (nOAuth)
    home_account_id: str  # MSAL's account key in the session's token cache
    claims: dict[str, Any]
    created_at: float
    expires_at: float  # absolute end of the session
    id_token: str = ""
    tokens: dict[str, UpstreamToken] = field(default_factory=dict)  # by scope_key()
    groups: tuple[str, ...] | None = None  # from Graph, when the token had the overage marker
    # Values derived from this (immutable) record, computed once: e.g. the identity headers of
    # each scope set (proxy/handler.py). Not stored, not compared; a changed record starts empty.
    derived: dict[Any, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    def token(self, scopes: tuple[str, ...]) -> UpstreamToken | None:
        return self.tokens.get(scope_key(scopes))

    @property
    def sid(self) -> str | None:
        """The provider's sign-in session (`sid`) that the kept id_token names, for the
        back-channel logout index; None without one. The token was verified when it came in;
        `sid` is not among the claims kept, so that the upstream never sees it."""
        try:
            payload = self.id_token.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (IndexError, ValueError):  # binascii, JSON and UTF-8 errors are ValueErrors
            return None
        sid = claims.get("sid") if isinstance(claims, dict) else None
        return sid if isinstance(sid, str) and 0 < len(sid) <= MAX_SID_LENGTH else None

    def with_token(
        self,
        scopes: tuple[str, ...],
        token: UpstreamToken | None,
        *,
        id_token: str | None = None,
        claims: dict[str, Any] | None = None,
    ) -> SessionRecord:
        """A copy holding `token` for `scopes` (none: no bearer token for them), and the newer
        id_token and claims when a refresh brought them."""
        tokens = dict(self.tokens)
        if token is not None:
            tokens[scope_key(scopes)] = token
        return replace(
            self,
            tokens=tokens,
            id_token=id_token or self.id_token,
            claims=claims if claims is not None else self.claims,
        )

    def encode(self) -> bytes:
        # Field by field, not dataclasses.asdict, which deep-copies the claims first (a quarter
        # of the CPU): the same JSON.
        data = {
            "v": FORMAT_VERSION,
            "user_key": self.user_key,
            "home_account_id": self.home_account_id,
            "claims": self.claims,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "id_token": self.id_token,
            "tokens": {
                key: {
                    "access_token": token.access_token,
                    "expires_at": token.expires_at,
                    "refresh_at": token.refresh_at,
                }
                for key, token in self.tokens.items()
            },
            "groups": self.groups,
        }
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> SessionRecord:
        """The record, or CorruptRecordError for anything but this version's exact shape (an
        older or newer gateway's record, during a rolling upgrade, reads as signed out)."""
        try:
            data = json.loads(raw)
            if data.pop("v", None) != FORMAT_VERSION:
                raise ValueError("unknown session record version")
            tokens = {}
            for key, value in data.get("tokens", {}).items():
                token = UpstreamToken(**value)
                _check_types(token, access_token=str, expires_at=float, refresh_at=float)
                tokens[str(key)] = token
            data["tokens"] = tokens
            if data.get("groups") is not None:
                if not isinstance(data["groups"], list):
                    raise TypeError("groups must be a list")
                data["groups"] = tuple(str(group) for group in data["groups"])
            record = cls(**data)
            _check_types(
                record,
                user_key=str,
                home_account_id=str,
                claims=dict,
                created_at=float,
                expires_at=float,
                id_token=str,
            )
            return record
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CorruptRecordError("session record does not parse") from exc


def _check_types(value: object, **expected: type) -> None:
    for name, kind in expected.items():
        field = getattr(value, name)
        # JSON has one number type: an int where a float is due is fine, a bool is not.
        ok = isinstance(field, kind) or (kind is float and isinstance(field, int))
        if not ok or isinstance(field, bool):
            raise TypeError(f"{name} has the wrong type")


@dataclass(frozen=True, slots=True)
class StoredSession:
    record: SessionRecord
    stored: bytes
    # The store key it was read under: during a cookie-secret rotation, perhaps the name another
    # secret gives the session (a replica that disagrees on the current secret wrote it there).
    key: str = ""
    stale: bool = False  # sealed with, or named by, a previous secret: to be re-sealed


class SessionStore:
    """Load, save and delete session records. Absent, expired and corrupt records read as None.

    With a cache (and, for a shared store, the notice feed that keeps it honest:
    sessions/cache.py), a recently read record is served from memory; every change made here drops
    it locally and, through a notice, on every other process. Listeners (`on_change`) hear of
    every change made in this process: the store key and whether the session is gone."""

    def __init__(
        self,
        storage: Storage,
        sealer: Sealer,
        idle_ttl: float,
        clock: Clock,
        *,
        cache: SessionCache[SessionRecord] | None = None,
        notices: Notices | None = None,
    ) -> None:
        assert cache is None or notices is not None or cache.local, (
            "a cache in front of a shared store is only safe with its notices"
        )
        self._storage = storage
        self._sealer = sealer
        self._idle_ttl = idle_ttl
        self._clock = clock
        self.cache = cache
        self._notices = notices
        self._reading: dict[str, asyncio.Future[SessionRecord | None]] = {}
        self._listeners: list[Callable[[str, bool], None]] = []
        self._movers: list[Callable[[str, SessionRecord], Awaitable[None]]] = []
        # With a cache, the keyed digest of a busy session's id is remembered too (an HMAC per
        # request otherwise); the bound keeps attacker-chosen ids from growing it.
        self._key = (
            functools.lru_cache(maxsize=cache.max_entries)(self._digest_key)
            if cache is not None
            else self._digest_key
        )

    def key(self, session_id: str) -> str:
        return self._key(session_id)

    def on_change(self, listener: Callable[[str, bool], None]) -> None:
        """Call `listener(key, gone)` after every save, replace and delete made in this process."""
        self._listeners.append(listener)

    def on_move(self, mover: Callable[[str, SessionRecord], Awaitable[None]]) -> None:
        """Await `mover(session_id, record)` after a record sealed or named with a previous
        cookie secret was re-sealed under the current one: what is kept beside the record (its
        token cache, its index entries) follows it there. A mover's failure is logged only."""
        self._movers.append(mover)

    def _digest_key(self, session_id: str) -> str:
        return SESSION_PREFIX + self._sealer.digest(session_id)

    async def load(self, session_id: str) -> SessionRecord | None:
        """The record: from the cache when it holds a recent copy, else one round trip that also
        slides the idle TTL. StoreUnavailable propagates."""
        key = self.key(session_id)
        cache = self.cache
        if cache is None:
            loaded = await self._find(session_id)
            return loaded.record if loaded else None
        cached = cache.get(key)
        if cached is not None:
            if cached.expires_at > self._clock():
                return cached
            cache.drop(key)
        # When a busy session's copy ages out, every request in flight for it misses at once:
        # one of them reads the store, the others wait for that answer.
        pending = self._reading.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this request was cancelled
                # The reading request was cancelled, not this one: read for ourselves.
                return await self.load(session_id)
        pending = self._reading[key] = asyncio.get_running_loop().create_future()
        try:
            generation = cache.generation()
            loaded = await self._find(session_id)
            record = loaded.record if loaded is not None else None
            if record is not None:
                cache.put(key, record, generation)
            pending.set_result(record)
            return record
        except asyncio.CancelledError:
            pending.cancel()
            raise
        except BaseException as exc:
            pending.set_exception(exc)
            pending.exception()  # retrieved here, so an unawaited failure is not reported
            raise
        finally:
            del self._reading[key]

    async def load_stored(self, session_id: str) -> StoredSession | None:
        """The record with the stored bytes that a later `replace` must still find: always read
        from the store (a cached copy may be older than what a compare-and-set must match)."""
        return await self._find(session_id)

    async def stored(self, session_id: str, *, slide: bool) -> bool:
        """Whether the store holds the session now (not signed out, revoked or idle-expired),
        never from the cache, under any name a configured secret gives it; the record is not
        opened. An open WebSocket's check (auth/sockets.py) needs no more, and makes it for every
        session with sockets every few seconds: thousands of them must not cost an AEAD open and
        a decode each. The idle TTL slides only with `slide`: a socket keeps its session alive
        while messages pass, not merely because it is open."""
        slide_ttl = self._idle_ttl if slide else None
        for key, _ in self._names(session_id):
            if await self._storage.get(key, slide_ttl=slide_ttl) is not None:
                return True
        return False

    def _names(self, session_id: str) -> Iterator[tuple[str, bool]]:
        """The session's store key under the current secret, then, during a rotation, under the
        other secrets, each with whether it is a previous secret's (to be moved from)."""
        yield self.key(session_id), False
        if self._sealer.rotating:
            for name, stale in self._sealer.older_digests(session_id):
                yield SESSION_PREFIX + name, stale

    async def _find(self, session_id: str, *, slide: bool = True) -> StoredSession | None:
        """The record under its current name; during a rotation (and only when that misses, so
        the hot path costs one read as before) under the names the other secrets give it. A
        record a previous secret sealed or named is re-sealed under the current name here."""
        found = None
        for key, stale in self._names(session_id):
            found = await self._read(key, slide=slide, stale=stale)
            if found is not None:
                break
        if found is not None and found.stale:
            return await self._reseal(session_id, found)
        return found

    async def _reseal(self, session_id: str, found: StoredSession) -> StoredSession | None:
        key, ttl = self.key(session_id), self._ttl(found.record)
        sealed = self._sealer.seal(key, found.record.encode())
        if ttl <= 0:
            return found
        if found.key == key:
            written = await self._storage.replace(key, found.stored, sealed, ttl)
        else:
            # Moved: written only where nothing newer is (another replica may have moved it
            # first), then gone from the old name so it is never found there again.
            written = await self._storage.replace(key, None, sealed, ttl)
            if written:
                # The old name is taken only now. Already gone means the session ended (sign-out,
                # revocation) while this move was in flight: delete() removes the old names
                # before the current one, so the move is undone rather than bringing it back.
                if await self._storage.take(found.key) is None:
                    await self._storage.delete(key)
                    await self._changed(key, gone=True)
                    return None
                await self._changed(found.key, gone=True)
        if not written:
            # Someone changed it meanwhile: what is stored now is the truth.
            again = await self._read(key, slide=False)
            return again if again is not None and not again.stale else found
        await self._changed(key)
        log.info("session record re-sealed with the current cookie secret")
        for mover in self._movers:
            try:
                await mover(session_id, found.record)
            except Exception:  # the record itself is safe; a companion is left to expire
                log.warning("moving a re-sealed session's companion failed", exc_info=True)
        return StoredSession(found.record, sealed, key)

    async def _read(
        self, key: str, *, slide: bool = True, stale: bool = False
    ) -> StoredSession | None:
        sealed = await self._storage.get(key, slide_ttl=self._idle_ttl if slide else None)
        if sealed is None:
            return None
        try:
            opened = self._sealer.open_aged(key, sealed)
            record = SessionRecord.decode(opened.plaintext)
        except CorruptRecordError:
            log.warning("session record failed to open; treating as signed out", exc_info=True)
            await self._storage.delete(key)
            return None
        if record.expires_at <= self._clock():
            await self._storage.delete(key)
            return None
        return StoredSession(record, sealed, key, stale or opened.stale)

    def _ttl(self, record: SessionRecord) -> float:
        return min(self._idle_ttl, record.expires_at - self._clock())

    async def save(self, session_id: str, record: SessionRecord) -> None:
        key, ttl = self.key(session_id), self._ttl(record)
        if ttl > 0:
            await self._storage.set(key, self._sealer.seal(key, record.encode()), ttl)
            await self._changed(key)

    async def replace(
        self, session_id: str, previous: StoredSession, record: SessionRecord
    ) -> bool:
        """Write `record` only if the store still holds `previous`: a session deleted meanwhile
        (sign-out) stays deleted, and a newer write is not overwritten. Whether it was written."""
        key, ttl = previous.key or self.key(session_id), self._ttl(record)
        if ttl <= 0:
            return False
        sealed = self._sealer.seal(key, record.encode())
        written = await self._storage.replace(key, previous.stored, sealed, ttl)
        await self._changed(key)  # written or not, this process's copy may be stale
        return written

    async def delete(self, session_id: str) -> None:
        """Gone under every name a configured secret gives it (a rotation may have left it under
        another replica's)."""
        key = self.key(session_id)
        older = [SESSION_PREFIX + name for name, _ in self._sealer.older_digests(session_id)]
        # The older names first: a move in flight elsewhere (_reseal) takes the old name after
        # writing the current one, and undoes its write when the old name is already gone.
        for name in (*older, key):  # one key per call: fine for Redis Cluster
            await self._storage.delete(name)
        await self._changed(key, gone=True)
        for name in older:
            await self._changed(name, gone=True)

    async def _changed(self, key: str, *, gone: bool = False) -> None:
        for listener in self._listeners:
            listener(key, gone)
        if self.cache is not None:
            self.cache.drop(key)
        if self._notices is None:
            return
        try:
            await self._notices.publish(key)
        except StoreUnavailable:
            # The change itself is stored; other processes see it once their copy ages out.
            log.warning(
                "a session change could not be announced; other processes' cached copies "
                "expire within GATEWAY_SESSION__CACHE_SECONDS"
            )
