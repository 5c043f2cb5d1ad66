"""Turns for sign-in steps: at most N at once, and a callback before a start.

A sign-in storm queues two kinds of steps for the same few turns: starts (a new flow) and
callbacks (redeeming the code of a user who has just signed in at the provider). When both wait,
the next free turn goes to the oldest callback. A callback is a sign-in half done: its user has
already typed a password, its code expires within minutes, and a callback refused after the wait
sends that user round again; a start refused costs a click. Finishing the sign-ins in progress
first also bounds how many are in flight, which is what keeps a storm from piling up. Within each
kind, turns go in arrival order.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque


class Step(enum.Enum):
    START = "start"
    CALLBACK = "callback"


class Turns:
    """`limit` turns; `take` waits for one (callbacks first), `give_back` returns it."""

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiting: dict[Step, deque[asyncio.Future[None]]] = {
            Step.CALLBACK: deque(),
            Step.START: deque(),
        }

    @property
    def free(self) -> int:
        return self._free

    def waiting(self, step: Step) -> int:
        return sum(1 for waiter in self._waiting[step] if not waiter.done())

    async def take(self, step: Step) -> None:
        """Until a turn is this caller's. Cancelled (a timeout, say) while waiting, it leaves the
        queue; a turn handed to it in that same instant goes on to the next waiter."""
        if self._free > 0:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[step].append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give_back()  # handed over just as the wait ended: pass it on
            elif waiter in self._waiting[step]:  # give_back drops cancelled waiters it meets
                self._waiting[step].remove(waiter)
            raise

    def give_back(self) -> None:
        """Hand the turn to the oldest waiting callback, else the oldest waiting start."""
        for step in (Step.CALLBACK, Step.START):
            queue = self._waiting[step]
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self._free += 1
