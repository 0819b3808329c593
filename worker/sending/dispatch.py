"""Finding due steps for the workers: the dispatcher leases due rows in batches (backpressure:
never more in flight than `dispatch_batch`), and the sweeper re-queues what a lost message held,
writes back accepted sends a dead worker left, and marks `unknown` what was handed to a
provider with no answer recorded.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from worker.kit import metrics
from worker.runtime.process import Runtime
from worker.sending.complete import complete_accepted
from worker.store.db import transaction
from worker.store.steps import Swept, claim_due, in_flight, sweep


def lease_due(runtime: Runtime, now: datetime) -> list[list[str]]:
    """Lease due steps (committed before anything is enqueued: a rolled-back lease never starts
    a task), cut into batches of `send_batch` in due order, one send task each."""
    config = runtime.config
    with transaction(runtime.database) as session:
        room = config.dispatch_batch - in_flight(session)
        if room <= 0:
            return []
        leased = claim_due(session, now, room, timedelta(seconds=config.lease_seconds))
    size = max(1, config.send_batch)
    return [leased[start : start + size] for start in range(0, len(leased), size)]


def sweep_steps(runtime: Runtime, now: datetime) -> Swept:
    """Re-queue expired leases; write back accepted sends older than a lease; steps `sending`
    with no answer for longer than `unknown_after` become unknown."""
    unknown_after = timedelta(seconds=runtime.config.unknown_after_seconds)
    with transaction(runtime.database) as session:
        swept = sweep(session, now, unknown_after)
    for channel in swept.unknown_channels:
        metrics.count_send(channel, "unknown")
    return replace(swept, completed=complete_accepted(runtime, now))
