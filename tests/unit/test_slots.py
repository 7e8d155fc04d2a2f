"""The slots on their own: priority, withdrawal, closing, and that a slot is released
exactly once however its holder leaves."""

from __future__ import annotations

import asyncio

import pytest

from runbook.run.slots import Refused, Slots


def run(coroutine):
    return asyncio.run(coroutine)


def test_free_slots_are_granted_at_once_and_given_back() -> None:
    async def main() -> list[int]:
        slots = Slots(2)
        seen = []
        async with slots.held((0, "a"), "a"):
            seen.append(slots.free)
            async with slots.held((0, "b"), "b"):
                seen.append(slots.free)
        seen.append(slots.free)
        return seen

    assert run(main()) == [1, 0, 2]


def test_a_freed_slot_goes_to_the_waiter_with_the_lowest_priority_key() -> None:
    async def main() -> list[str]:
        slots = Slots(1)
        order: list[str] = []
        release = asyncio.Event()

        async def hold(name: str, priority: tuple[int, str], wait: bool = False) -> None:
            async with slots.held(priority, name):
                order.append(name)
                if wait:
                    await release.wait()

        first = asyncio.ensure_future(hold("first", (0, "first"), wait=True))
        await asyncio.sleep(0)
        waiters = [
            asyncio.ensure_future(hold(name, priority))
            for name, priority in (("late", (2, "late")), ("b", (1, "b")), ("a", (1, "a")))
        ]
        await asyncio.sleep(0)
        assert slots.waiting == 3 and slots.free == 0
        release.set()
        await asyncio.gather(first, *waiters)
        assert slots.free == 1
        return order

    assert run(main()) == ["first", "a", "b", "late"]


def test_a_withdrawn_waiter_is_refused_and_holds_nothing() -> None:
    async def main() -> tuple[str, int]:
        slots = Slots(1)
        async with slots.held((0, "a"), "a"):
            waiter = asyncio.ensure_future(slots.held((1, "b"), "b").__aenter__())
            await asyncio.sleep(0)
            slots.withdraw("b")
            with pytest.raises(Refused):
                await waiter
        return "left", slots.free

    assert run(main()) == ("left", 1)


def test_closing_refuses_every_waiter_and_every_later_hold() -> None:
    async def main() -> int:
        slots = Slots(1)
        refused = 0
        async with slots.held((0, "a"), "a"):
            waiters = [
                asyncio.ensure_future(slots.held((1, name), name).__aenter__()) for name in "bc"
            ]
            await asyncio.sleep(0)
            slots.close()
            for waiter in waiters:
                with pytest.raises(Refused):
                    await waiter
                refused += 1
        with pytest.raises(Refused):
            async with slots.held((0, "d"), "d"):
                pass  # pragma: no cover - refused
        return refused

    assert run(main()) == 2


def test_a_holder_that_raises_or_is_cancelled_gives_its_slot_back() -> None:
    async def main() -> int:
        slots = Slots(1)
        with pytest.raises(ValueError):
            async with slots.held((0, "a"), "a"):
                raise ValueError
        started = asyncio.Event()

        async def hold_forever() -> None:
            async with slots.held((0, "b"), "b"):
                started.set()
                await asyncio.Event().wait()

        task = asyncio.ensure_future(hold_forever())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return slots.free

    assert run(main()) == 1


def test_a_waiter_cancelled_as_its_slot_is_granted_passes_it_on() -> None:
    async def main() -> tuple[list[str], int]:
        slots = Slots(1)
        got: list[str] = []

        async def hold(name: str) -> None:
            async with slots.held((1, name), name):
                got.append(name)

        async with slots.held((0, "a"), "a"):
            b = asyncio.ensure_future(hold("b"))
            c = asyncio.ensure_future(hold("c"))
            await asyncio.sleep(0)
        # the release granted b's wait; b is cancelled before it could run
        b.cancel()
        with pytest.raises(asyncio.CancelledError):
            await b
        for _ in range(3):  # c's grant and its block take a turn or two of the loop
            await asyncio.sleep(0)
        assert c.done(), "the slot b was granted was lost with b"
        return got, slots.free

    assert run(main()) == (["c"], 1)
