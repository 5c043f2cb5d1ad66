"""Sentinel mode: which Redis master the gateway writes to, and how many replicas must confirm each
write there before it counts as done (THREATS.md F-05, F-25). store/redis.py sends the writes and
their WAIT; store/redis_clients.py builds the pool this watch moves.

Which master. Every sentinel is asked, and each answer names at most one master:
- its master, while that master is up and no failover of it is under way;
- during a failover it leads, the replica it promoted, as soon as that replica reports itself
  master. The failover cannot be undone from then on, and the sentinel's configuration epoch has
  grown (SENTINEL GET-MASTER-ADDR-BY-NAME names that replica too). Following it now rather than at
  the sentinels' switch is what brings writes back within a second of the promotion: the leader
  switches only once every other replica has resynchronised from the new master, and after a
  SENTINEL FAILOVER that is a full resynchronisation (the replicas were fed by the old master past
  the promotion point), which waits repl-diskless-sync-delay (5 s by default) before it starts;
- nothing while a failover is still electing, choosing or promoting, or while the master is down.
The highest epoch wins, as among the sentinels. A lower one than the master followed is accepted
only once every sentinel names it (they were reset), never because the sentinel that knew better
did not answer: moving back would put writes on a master that has been replaced.

How many replicas confirm (GATEWAY_REDIS__REPLICA_ACKS). `all`: every replica the master itself
counts as online with a recent acknowledgement (INFO replication; GATEWAY_REDIS__REPLICA_MAX_LAG_
SECONDS), and at least one while the sentinels see one up. A write is then on every replica the
sentinels could promote, so it survives the loss of any one node. With one confirmation (WAIT 1)
and two replicas, a failover that promotes the other replica loses it: hundreds of confirmed
writes in every SENTINEL FAILOVER under load (the other replica confirmed them on the old master,
then resynchronised from the promoted one), and after a kill -9 whatever the sentinels' choice
had not received (they promote by replica-priority, then by offsets that may be seconds old). A
number N asks for N, fewer only while fewer replicas are up.

The number is raised at once and lowered only when it is safe to: fewer replicas have been seen
for LOWER_AFTER_SECONDS, a majority of the sentinels answered, and none of them is failing a
master over. A replica that leaves because it is being promoted must never make the old master's
writes need fewer confirmations, or its remaining replica would confirm writes the promoted one
never sees; the second of waiting also orders the master's count after the sentinels' news of a
failover (both are asked at once). A new master starts from what the sentinels know of its
replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from redis.asyncio import Redis
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, RedisError

log = logging.getLogger(__name__)

_FAILURES: Final = (RedisError, OSError, TimeoutError)
MASTER_CHECK_SECONDS: Final = 1.0
# A burst of failing calls shares one look at the sentinels; during a failover, and for a while
# after following a new master (its replicas attach), the sentinels are asked this often anyway.
RECHECK_SECONDS: Final = 0.1
FAST_SECONDS: Final = 5.0
# Fewer confirmations are asked for only once fewer replicas have been seen for this long.
LOWER_AFTER_SECONDS: Final = 1.0

Address = tuple[str, int]
Policy = int | Literal["all"]


def _flags(state: dict[str, Any]) -> set[str]:
    flags = state.get("flags", "")
    return set(flags.split(",")) if isinstance(flags, str) else set(flags)


def _address(state: dict[str, Any]) -> Address:
    return str(state["ip"]), int(state["port"])


def _up(replica: dict[str, Any]) -> bool:
    """A replica that can confirm writes now or soon: one the sentinel reaches and that calls
    itself a replica, or one a failover is moving to the new master (the sentinel's link to it
    drops for a moment as it obeys). An old master awaiting demotion reports itself master and
    is not one, nor is a replica the sentinel cannot reach (a killed master's entry, newly listed
    among the replicas, is that until the sentinels judge it down)."""
    flags = _flags(replica)
    if flags & {"s_down", "o_down"}:
        return False
    if flags & {"reconf_sent", "reconf_inprog", "reconf_done"}:
        return True
    return "disconnected" not in flags and replica.get("role-reported") == "slave"


@dataclass(frozen=True)
class View:
    """One sentinel's answer: the master it names (None: none now), its configuration epoch, and
    what it knows of that master's replicas."""

    epoch: int
    master: Address | None
    failing_over: bool  # a failover of the master is under way, or the master is down
    replicas_up: int
    replica_claims_master: bool

    @classmethod
    def read(cls, master: dict[str, Any], replicas: Sequence[dict[str, Any]]) -> View:
        flags = _flags(master)
        epoch = int(master.get("config-epoch", 0))
        if "failover_in_progress" in flags:
            promoted = [
                r
                for r in replicas
                if "promoted" in _flags(r) and r.get("role-reported") == "master"
            ]
            if promoted:
                others = [r for r in replicas if r is not promoted[0]]
                return cls(epoch, _address(promoted[0]), True, sum(map(_up, others)), False)
            return cls(epoch, None, True, 0, False)
        # `disconnected` alone is not down: the sentinels' links to a just-promoted master show
        # it for a moment.
        if "master" not in flags or flags & {"s_down", "o_down"}:
            return cls(epoch, None, True, 0, False)
        claims = any(r.get("role-reported") == "master" for r in replicas)
        return cls(epoch, _address(master), False, sum(map(_up, replicas)), claims)


def pick(views: Sequence[View], configured: int, following: View | None) -> View | None:
    """The view naming the master to write to; None: no change (or nothing to follow)."""
    naming = [view for view in views if view.master is not None]
    if not naming:
        return None
    best = max(naming, key=lambda view: view.epoch)
    if following is not None and best.epoch < following.epoch:
        reset = len(views) == configured and all(
            view.master == best.master and view.epoch == best.epoch for view in views
        )
        return best if reset else None
    return best


def required(policy: Policy, linked: int, up: int) -> int:
    """Confirmations to ask of a master with `linked` replicas streaming from it and `up`
    replicas the sentinels see up."""
    if policy == "all":
        return max(linked, min(1, up))
    return min(policy, max(linked, up))


class Sentinels(Sentinel):
    """Asks every sentinel and believes the highest configuration epoch, as the sentinels do.

    redis-py asks one sentinel after another and takes the first plausible answer, so in the
    seconds after a failover a sentinel that has not heard of it yet sends connections to the
    demoted master. It also reorders its list by swapping slots across awaits, which concurrent
    discoveries (every connection re-dialling in a failover) turn into a duplicated sentinel and a
    dropped one (seen in the tests; compare redis/redis-py#4331). Nothing here reorders the list.
    """

    async def views(self, name: str) -> tuple[list[View], list[str]]:
        """Each answering sentinel's view of master `name`, and a note on each sentinel that did
        not answer."""

        async def ask(client: Redis) -> View:
            master = await client.sentinel_master(name)
            replicas = await client.sentinel_slaves(name)
            if not isinstance(master, dict):
                raise RedisConnectionError("unexpected SENTINEL MASTER reply")
            return View.read(master, list(replicas))

        clients = list(self.sentinels)
        answers = await asyncio.gather(*(ask(c) for c in clients), return_exceptions=True)
        views, notes = [], []
        for client, answer in zip(clients, answers, strict=True):
            if isinstance(answer, _FAILURES):
                where = "{host}:{port}".format(**client.connection_pool.connection_kwargs)
                notes.append(f"{where} {type(answer).__name__}")  # never the text: no secrets
            elif isinstance(answer, BaseException):
                raise answer
            else:
                views.append(answer)
        return views, notes

    async def discover_master(self, service_name: str) -> Address:
        views, notes = await self.views(service_name)
        best = pick(views, len(self.sentinels), None)
        if best is None or best.master is None:
            notes.append(f"{len(views)} answered without a serving master {service_name!r}")
            raise MasterNotFoundError("no Redis master from the sentinels: " + "; ".join(notes))
        return best.master


class MasterWatch:
    """Keeps the pool on the master the sentinels name, and knows how many replicas must confirm
    a write there (`acks`; None until the sentinels have named a master)."""

    def __init__(
        self,
        sentinels: Sentinels,
        pool: SentinelConnectionPool,
        name: str,
        policy: Policy,
        max_lag: float,
    ) -> None:
        self.sentinels = sentinels
        self._pool = pool
        self._client = Redis(connection_pool=pool)  # does not own the pool
        self._name = name
        self._policy = policy
        self._max_lag = max_lag
        self.acks: int | None = None
        self._following: View | None = None
        # Since when, and to what, the checks would have lowered the number.
        self._fewer: tuple[float, int] | None = None
        self._checked = asyncio.Event()
        self._poked = asyncio.Event()
        self._fast_until = 0.0
        self._stopping = False
        self._info_denied = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def poke(self) -> None:
        self._poked.set()

    async def stop(self) -> None:
        if self._task is not None:
            # The flag as well as the cancellation: on Python 3.11 a task cancelled while a
            # redis-py command completes can miss the CancelledError (seen: the watch kept
            # checking, and close() waited for it forever).
            self._stopping = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def current(self) -> Address | None:
        """The master the pool's connections go to."""
        return self._pool.master_address

    async def checked(self) -> None:
        """Return once the first check is done, whatever it found."""
        self.start()
        await self._checked.wait()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            self._poked.clear()
            try:
                await self.check()
            except Exception:  # the watch must outlive any one failed check
                log.warning("checking the Redis master failed; trying again", exc_info=True)
            self._checked.set()
            await asyncio.sleep(RECHECK_SECONDS)
            if loop.time() < self._fast_until:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(MASTER_CHECK_SECONDS - RECHECK_SECONDS):
                    await self._poked.wait()

    async def check(self) -> None:
        views, linked = await asyncio.gather(self._views(), self._linked())
        if any(view.failing_over for view in views):
            self._hurry()
        target = pick(views, len(self.sentinels.sentinels), self._following)
        if target is None or target.master is None:
            return  # nothing better known: keep the master and the number
        up = max(view.replicas_up for view in views if view.master == target.master)
        if self._following is None or target.master != self._following.master:
            self._follow(target)
            # Set before the next await: a write that reads the number from now on is sent on a
            # connection to the new master.
            self._set(required(self._policy, 0, up), "following a new master")
            self._fewer = None
            linked = self._or_up(await self._linked(), up)
            self._set(max(self.acks or 0, required(self._policy, linked or 0, up)), "replicas")
            return
        linked = self._or_up(linked, up)
        self._following = target
        if linked is None or self.acks is None:
            return  # the master did not answer, or not as a master: keep the number
        want = required(self._policy, linked, up)
        if want >= self.acks:
            self._set(want, f"{linked} linked, {up} up")
            self._fewer = None
        elif not self._settled(views, target):
            self._fewer = None
        else:
            now = asyncio.get_running_loop().time()
            since, most = self._fewer or (now, want)
            most = max(want, most)  # the most any check in the period asked for
            self._fewer = since, most
            if now - since >= LOWER_AFTER_SECONDS:
                self._set(most, f"{linked} linked, {up} up for {now - since:.1f} s")
                self._fewer = None

    def _set(self, acks: int, why: str) -> None:
        if acks != self.acks:
            log.info("Redis writes now need %d replica confirmations (%s)", acks, why)
        self.acks = acks

    def _settled(self, views: Sequence[View], target: View) -> bool:
        """Whether fewer confirmations may be asked of `target` now: a majority of the sentinels
        answered, none is failing a master over, and no replica of it calls itself master unless
        every sentinel names `target` (then it is the former master awaiting demotion, not a
        promotion a sentinel has not heard of)."""
        if len(views) <= len(self.sentinels.sentinels) // 2:
            return False
        if any(view.failing_over for view in views):
            return False
        unanimous = all(view.master == target.master for view in views)
        return unanimous or not any(view.replica_claims_master for view in views)

    async def _views(self) -> list[View]:
        views, _ = await self.sentinels.views(self._name)
        return views

    async def _linked(self) -> int | None:
        """Replicas streaming from the current master with a recent acknowledgement, by the
        master's own account; None if it does not answer as a master."""
        if self._pool.master_address is None:
            return None
        try:
            info = await self._client.info("replication")
        except NoPermissionError:
            if not self._info_denied:
                log.error(
                    "the Redis ACL user may not run INFO: writes now wait for every replica the "
                    "sentinels see up, including one still resynchronising, instead of those "
                    "the master counts in sync; allow INFO (+info) to the gateway's user"
                )
            self._info_denied = True
            return None
        except _FAILURES:
            return None
        if info.get("role") != "master":
            return None
        return sum(
            1
            for key, replica in info.items()
            if key.startswith("slave")
            and isinstance(replica, dict)
            and replica.get("state") == "online"
            and float(replica.get("lag", 0)) <= self._max_lag
        )

    def _or_up(self, linked: int | None, up: int) -> int | None:
        """Without INFO, the replicas the sentinels see up stand in for those in sync: more
        refusals while one resynchronises, never fewer confirmations."""
        return up if linked is None and self._info_denied else linked

    def _hurry(self) -> None:
        self._fast_until = asyncio.get_running_loop().time() + FAST_SECONDS

    def _follow(self, target: View) -> None:
        assert target.master is not None
        previous = self._pool.master_address
        self._following = target
        self._hurry()  # its replicas are attaching: count them as they come
        if previous == target.master:
            return
        if previous is not None:
            log.warning(
                "the sentinels name a new Redis master %s:%s (was %s:%s); reconnecting",
                *target.master,
                *previous,
            )
        # The pool reconnects every connection to the old master as it next hands it out.
        self._pool.master_address = target.master
