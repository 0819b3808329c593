"""Concurrent single requests gathered into one set-based apply (group commit): a request that
finds the process idle is applied at once; those that arrive meanwhile wait for it and go
together in the next group, in arrival order, each caller getting its own result.

One group is applied at a time per process (in a thread of its own, so the event loop keeps
reading requests), which keeps one lead's events in the order they arrived.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
log = logging.getLogger(__name__)


@dataclass
class _Waiting(Generic[Item, Result]):
    item: Item
    answer: asyncio.Future[Result | Exception]


class Coalescer(Generic[Item, Result]):
    """`apply(items)` gives one result, or the exception to raise, per item in order; it runs
    in a thread and must not raise (a raise fails every caller of its group)."""

    def __init__(
        self,
        apply: Callable[[list[Item]], list[Result | Exception]],
        *,
        most: int,
        window: float = 0.0,
        name: str = "coalesce",
    ) -> None:
        self._apply = apply
        self._most = most
        self._window = window
        self._waiting: list[_Waiting[Item, Result]] = []
        self._running: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=name)
        self.groups = 0
        """Groups applied so far (for tests and the bench)."""

    async def submit(self, item: Item) -> Result:
        """The item's result, applied with whatever else is waiting; its exception re-raised."""
        loop = asyncio.get_running_loop()
        waiting: _Waiting[Item, Result] = _Waiting(item, loop.create_future())
        self._waiting.append(waiting)
        if self._running is None:
            self._running = loop.create_task(self._run())
        found = await asyncio.shield(waiting.answer)
        if isinstance(found, Exception):
            raise found
        return found

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self._window:
                await asyncio.sleep(self._window)
            while self._waiting:
                group, self._waiting = self._waiting[: self._most], self._waiting[self._most :]
                items = [w.item for w in group]
                try:
                    results = await loop.run_in_executor(self._thread, self._apply, items)
                except Exception as exc:
                    log.exception("a group of %d coalesced requests failed", len(group))
                    results = [exc] * len(group)
                except BaseException:  # cancelled (shutdown): nobody waits on an answer forever
                    self._waiting[:0] = group
                    raise
                self.groups += 1
                for waiting, result in zip(group, results, strict=True):
                    if not waiting.answer.done():
                        waiting.answer.set_result(result)
        finally:
            self._running = None
            for waiting in self._waiting:  # only when this task itself was cancelled (shutdown)
                if not waiting.answer.done():
                    waiting.answer.cancel()

    def close(self) -> None:
        self._thread.shutdown(wait=False)
