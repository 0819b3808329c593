"""Concurrent single requests gathered into one set-based apply (group commit): the requests
that arrive while the process is busy go together in the next group, in arrival order, each
caller getting its own result. A request that finds the process idle is applied at once,
unless the group just answered held several: then it waits up to `window` seconds, or until
as many requests are waiting, for the others' next requests.

Up to `parallel` groups are applied at a time per process (each in a thread, so the event
loop keeps reading requests and one group's database round trips overlap another's work). A
group never overtakes an earlier one that names one of its keys (a lead's identities, an event
id): it starts only with the waiting requests before the first such one, so one lead's events
keep the order they arrived in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Set
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
log = logging.getLogger(__name__)
RECENT = 0.05
"""Seconds after a group's answers within which its clients' next requests are expected."""


@dataclass
class _Waiting(Generic[Item, Result]):
    item: Item
    keys: Set[str]
    answer: asyncio.Future[Result | Exception]


class Coalescer(Generic[Item, Result]):
    """`apply(items)` gives one result, or the exception to raise, per item in order; it runs
    in a thread and must not raise (a raise fails every caller of its group). `keys(item)`
    names what two items must not be applied concurrently over."""

    def __init__(
        self,
        apply: Callable[[list[Item]], list[Result | Exception]],
        keys: Callable[[Item], Set[str]],
        *,
        most: int,
        parallel: int = 1,
        window: float = 0.0,
        name: str = "coalesce",
    ) -> None:
        self._apply = apply
        self._keys = keys
        self._most = most
        self._parallel = parallel
        self._window = window
        self._waiting: list[_Waiting[Item, Result]] = []
        self._flying: dict[asyncio.Task[None], Set[str]] = {}
        self._pump_due = False
        self._timer: asyncio.TimerHandle | None = None
        self._expect = 0
        """How many requests the last group answered: as many are likely on their way back."""
        self._answered_at = 0.0
        self._threads = ThreadPoolExecutor(parallel, thread_name_prefix=name)
        self.groups = 0
        """Groups applied so far (for tests and the bench)."""

    async def submit(self, item: Item) -> Result:
        """The item's result, applied with whatever else is waiting; its exception re-raised."""
        loop = asyncio.get_running_loop()
        waiting: _Waiting[Item, Result] = _Waiting(item, self._keys(item), loop.create_future())
        self._waiting.append(waiting)
        if self._timer is not None and len(self._waiting) >= self._expect:
            self._timer.cancel()  # as many as the last group: no reason to wait longer
            self._timer = None
            loop.call_soon(self._pump)
        elif not self._pump_due:
            # after the requests already runnable have queued too: they go in the same group
            self._pump_due = True
            if self._gathering(loop):
                self._timer = loop.call_later(self._window, self._pump)
            else:
                loop.call_soon(self._pump)
        found = await asyncio.shield(waiting.answer)
        if isinstance(found, Exception):
            raise found
        return found

    def _gathering(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether a request finding the process idle should wait for company: only when the
        last group, just answered, held several (their clients are sending their next ones);
        a lone client's request never waits."""
        recent = loop.time() - self._answered_at < RECENT
        return bool(self._window) and not self._flying and self._expect > 1 and recent

    def _pump(self) -> None:
        """Start groups while a slot is free and the head of the queue may go."""
        self._pump_due = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting and len(self._flying) < self._parallel:
            group = self._next_group()
            if not group:
                return  # the head waits for a group in flight that names its keys
            keys = frozenset().union(*(w.keys for w in group))
            task = asyncio.get_running_loop().create_task(self._run(group))
            self._flying[task] = keys

    def _next_group(self) -> list[_Waiting[Item, Result]]:
        busy: set[str] = set().union(*self._flying.values())
        count = 0
        for waiting in self._waiting[: self._most]:
            if busy & waiting.keys:
                break
            count += 1
        group, self._waiting = self._waiting[:count], self._waiting[count:]
        return group

    async def _run(self, group: list[_Waiting[Item, Result]]) -> None:
        loop = asyncio.get_running_loop()
        items = [w.item for w in group]
        try:
            results = await loop.run_in_executor(self._threads, self._apply, items)
        except Exception as exc:
            log.exception("a group of %d coalesced requests failed", len(group))
            results = [exc] * len(group)
        except BaseException:  # cancelled (shutdown): nobody waits on an answer forever
            for waiting in group:
                waiting.answer.cancel()
            raise
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._flying.pop(task, None)
        self.groups += 1
        self._expect, self._answered_at = len(group), loop.time()
        for waiting, result in zip(group, results, strict=True):
            if not waiting.answer.done():
                waiting.answer.set_result(result)
        self._pump()

    def close(self) -> None:
        self._threads.shutdown(wait=False)
