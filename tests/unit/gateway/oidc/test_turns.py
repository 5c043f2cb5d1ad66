"""Sign-in turns: a bound, callbacks before starts, arrival order within each kind, and no turn
lost or duplicated when a wait ends by timeout or cancellation."""

from __future__ import annotations

import asyncio

import pytest

from gateway.oidc.turns import Step, Turns


async def _waiting(turns: Turns, step: Step, order: list[str], name: str) -> None:
    await turns.take(step)
    order.append(name)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_turns_are_taken_at_once_while_free_and_never_beyond_the_limit() -> None:
    turns = Turns(2)
    await turns.take(Step.START)
    await turns.take(Step.CALLBACK)
    assert turns.free == 0
    third = asyncio.create_task(turns.take(Step.START))
    await _settle()
    assert not third.done() and turns.waiting(Step.START) == 1
    turns.give_back()
    await third
    assert turns.free == 0
    turns.give_back()
    turns.give_back()
    assert turns.free == 2


async def test_a_waiting_callback_goes_before_starts_that_waited_longer() -> None:
    turns = Turns(1)
    await turns.take(Step.START)
    order: list[str] = []
    tasks = [asyncio.create_task(_waiting(turns, Step.START, order, "start 1"))]
    await _settle()
    tasks.append(asyncio.create_task(_waiting(turns, Step.START, order, "start 2")))
    await _settle()
    tasks.append(asyncio.create_task(_waiting(turns, Step.CALLBACK, order, "callback 1")))
    await _settle()
    tasks.append(asyncio.create_task(_waiting(turns, Step.CALLBACK, order, "callback 2")))
    await _settle()
    for _ in tasks:
        turns.give_back()
        await _settle()
    await asyncio.gather(*tasks)
    assert order == ["callback 1", "callback 2", "start 1", "start 2"]
    turns.give_back()
    assert turns.free == 1


async def test_a_wait_that_times_out_leaves_the_queue_and_the_turn_stays_countable() -> None:
    turns = Turns(1)
    await turns.take(Step.CALLBACK)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await turns.take(Step.CALLBACK)
    assert turns.waiting(Step.CALLBACK) == 0
    turns.give_back()
    assert turns.free == 1


async def test_a_turn_handed_to_a_wait_cancelled_in_the_same_instant_goes_to_the_next() -> None:
    turns = Turns(1)
    await turns.take(Step.START)
    first = asyncio.create_task(turns.take(Step.START))
    second = asyncio.create_task(turns.take(Step.START))
    await _settle()
    turns.give_back()  # the first waiter's turn...
    first.cancel()  # ...and its wait is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)  # the turn was passed on, not lost
    assert turns.free == 0
    turns.give_back()
    assert turns.free == 1


async def test_a_cancelled_waiter_is_skipped_and_its_turn_is_not_counted_twice() -> None:
    turns = Turns(1)
    await turns.take(Step.START)
    gone = asyncio.create_task(turns.take(Step.START))
    await _settle()
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    turns.give_back()
    assert turns.free == 1
    await turns.take(Step.CALLBACK)
    assert turns.free == 0
