"""The coalescer alone (no database): groups form from what waits, several run at a time, and
a group never overtakes an earlier one over the same key."""

from __future__ import annotations

import asyncio
import threading
import time

from tests.helpers import run_async
from worker.ingest.coalesce import Coalescer


def test_groups_run_side_by_side_but_one_key_keeps_its_order() -> None:
    applied: list[list[str]] = []
    running: list[int] = [0, 0]  # now, most at once
    lock = threading.Lock()

    def apply(items: list[str]) -> list[str | Exception]:
        with lock:
            running[0] += 1
            running[1] = max(running)
        time.sleep(0.05)
        with lock:
            running[0] -= 1
            applied.append(items)
        return [f"{item}!" for item in items]

    def keys(item: str) -> frozenset[str]:
        return frozenset({item.split("-")[0]})

    async def run() -> list[str]:
        coalescer = Coalescer(apply, keys, most=3, parallel=2)
        first = asyncio.ensure_future(coalescer.submit("ana-1"))
        await asyncio.sleep(0.01)  # ana-1 alone in a group, in flight
        later = ["bo-1", "cy-1", "ana-2", "bo-2", "dee-1"]
        found = await asyncio.gather(first, *(coalescer.submit(item) for item in later))
        return list(found)

    results = run_async(run())
    assert results == ["ana-1!", "bo-1!", "cy-1!", "ana-2!", "bo-2!", "dee-1!"]
    # bo-1 and cy-1 ran beside ana-1; ana-2 waited for it, and bo-2 behind ana-2
    assert applied[0] == ["ana-1"]
    assert ["bo-1", "cy-1"] in applied
    assert applied.index(["bo-1", "cy-1"]) < next(
        n for n, group in enumerate(applied) if "ana-2" in group
    )
    assert running[1] == 2
    order = [item for group in applied for item in group]
    assert order.index("ana-1") < order.index("ana-2")
    assert order.index("bo-1") < order.index("bo-2")


def test_an_item_s_exception_is_raised_to_its_caller_alone() -> None:
    def apply(items: list[str]) -> list[str | Exception]:
        return [ValueError(item) if item == "bad" else item for item in items]

    async def run() -> list[object]:
        coalescer = Coalescer(apply, lambda item: frozenset({item}), most=10)
        items = ["a", "bad", "b"]
        return list(
            await asyncio.gather(*(coalescer.submit(i) for i in items), return_exceptions=True)
        )

    a, bad, b = run_async(run())
    assert (a, b) == ("a", "b")
    assert isinstance(bad, ValueError)
    assert str(bad) == "bad"
