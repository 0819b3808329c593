"""What time alone does to leads: pauses end, scores decay across a line, quiet spells begin.
The engine says when each lead next needs a look (`wake_at`); this wakes the ones due."""

from __future__ import annotations

from datetime import datetime

from worker.kit.errors import NotFound
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.leads import leads_to_wake
from worker.world.unit import act_locked


def wake_due_leads(runtime: Runtime, now: datetime, limit: int) -> int:
    """Tick up to `limit` leads whose wake time has come, one transaction each."""
    with transaction(runtime.database) as session:
        ids = leads_to_wake(session, now, limit)
    for lead_id in ids:
        with transaction(runtime.database) as session:
            try:
                act_locked(
                    session,
                    runtime.engine,
                    lead_id,
                    lambda e, loaded, at: e.tick(loaded.world, at),
                    now,
                )
            except NotFound:  # erased since it was listed
                continue
    return len(ids)
