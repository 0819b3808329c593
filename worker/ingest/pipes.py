"""What one API process holds to take single events in: a coalescer applying them through the
batch path, one queuing early-answered events, and the drainer that applies the queue right
after. One set per runtime and event loop (`nurture api --workers N`: one per process).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from worker.ingest.coalesce import Coalescer
from worker.ingest.early import Drained, drain, queue_arrivals
from worker.ingest.intake import apply_arrivals
from worker.ingest.service import Arrival, Ingested, Queued
from worker.runtime.process import Runtime

log = logging.getLogger(__name__)
BUSY_PAUSE = 0.05
"""Seconds the drainer waits while another drainer holds the intake."""


class Drainer:
    """Applies the intake from this process after each early answer; it stops once it has
    seen the intake empty with no answer given since it looked."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="intake-drain")
        self._running: asyncio.Task[None] | None = None
        self._again = False

    def kick(self) -> None:
        self._again = True
        if self._running is None:
            self._running = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        config = self._runtime.config
        try:
            if config.fault_point == "before_drain":  # tests: kill the process with events queued
                await asyncio.sleep(config.fault_seconds)
            while True:
                self._again = False
                try:
                    found: Drained = await loop.run_in_executor(self._thread, drain, self._runtime)
                except Exception:  # the beat's sweep applies what is left
                    log.exception("draining the intake failed")
                    return
                if found.busy:
                    await asyncio.sleep(BUSY_PAUSE)
                elif not found.applied and not self._again:
                    return
        finally:
            self._running = None

    def close(self) -> None:
        self._thread.shutdown(wait=False)

    async def idle(self) -> None:
        """Until the drainer has stopped (tests)."""
        while self._running is not None:
            await asyncio.sleep(0.01)


@dataclass
class Pipes:
    runtime: Runtime
    loop: asyncio.AbstractEventLoop
    apply: Coalescer[Arrival, Ingested | Queued] = field(init=False)
    queue: Coalescer[Arrival, Queued | Ingested] = field(init=False)
    drainer: Drainer = field(init=False)
    early_sources: frozenset[str] = field(init=False)
    """The sources answered early without being asked (NURTURE_RESPOND_ASYNC_SOURCES)."""

    def __post_init__(self) -> None:
        config = self.runtime.config
        value = config.respond_async_sources
        self.early_sources = frozenset(s.strip() for s in value.split(",") if s.strip())
        window = config.coalesce_window_ms / 1000
        self.apply = Coalescer(
            lambda items: apply_arrivals(self.runtime, items),
            arrival_keys,
            most=config.coalesce_max,
            parallel=config.coalesce_parallel,
            window=window,
            name="coalesce",
        )
        # one group at a time: the intake's arrival order is its insert order
        self.queue = Coalescer(
            lambda items: queue_arrivals(self.runtime, items),
            arrival_keys,
            most=config.coalesce_max,
            window=window,
            name="intake",
        )
        self.drainer = Drainer(self.runtime)

    def close(self) -> None:
        self.apply.close()
        self.queue.close()
        self.drainer.close()


def arrival_keys(arrival: Arrival) -> frozenset[str]:
    """What two events must not be applied concurrently over: the identities that find their
    lead (emails match case-insensitively) and their idempotency id."""
    lead = arrival.event.lead
    keys = {f"e:{lead.email.lower()}" if lead.email else "", f"p:{lead.phone or ''}",
            f"x:{lead.external_id or ''}", f"i:{arrival.event.id or ''}"}  # fmt: skip
    return frozenset(k for k in keys if k and not k.endswith(":"))


_PIPES: dict[tuple[int, int], Pipes] = {}


def pipes_for(runtime: Runtime) -> Pipes:
    """This runtime's pipes on the running event loop, made on first use."""
    loop = asyncio.get_running_loop()
    key = (id(runtime), id(loop))
    found = _PIPES.get(key)
    if found is None or found.runtime is not runtime or found.loop is not loop:
        for old in [k for k, p in _PIPES.items() if p.loop.is_closed()]:
            _PIPES.pop(old).close()
        found = _PIPES[key] = Pipes(runtime, loop)
    return found
