"""What support and operators do to a lead: pause, resume, exit, what the CRM asks; and the
incident switches. Each action is one transaction per lead through the world unit of work
(worker/world/unit.py), recorded on the lead's timeline. Enrolling by hand is enrollments.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from worker.engine.core import Engine
from worker.engine.state import Outcome
from worker.kit.clock import utcnow
from worker.kit.errors import NotFound
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.leads import (
    find_lead,
)
from worker.store.switches import write_switch
from worker.store.worlds import Loaded
from worker.world.unit import with_lead


def lead_id_by_email(runtime: Runtime, email: str) -> str:
    with transaction(runtime.database) as session:
        row = find_lead(session, email=email)
        if row is None:
            raise NotFound(f"no lead with email {email}")
        return row.id


def pause_lead(
    runtime: Runtime,
    lead_id: str,
    *,
    sequence: str | None = None,
    reason: str | None = None,
    until: datetime | None = None,
    by: str | None = None,
) -> Outcome:
    return with_lead(
        runtime,
        lead_id,
        lambda engine, loaded, now: engine.pause(
            loaded.world, now, sequence_id=sequence, until=until, reason=reason, by=by
        ),
    )


def resume_lead(runtime: Runtime, lead_id: str, *, sequence: str | None = None) -> Outcome:
    return with_lead(
        runtime,
        lead_id,
        lambda engine, loaded, now: engine.resume(loaded.world, now, sequence_id=sequence),
    )


def exit_lead(runtime: Runtime, lead_id: str, sequence: str, reason: str = "manual") -> Outcome:
    return with_lead(
        runtime,
        lead_id,
        lambda engine, loaded, now: engine.exit(loaded.world, sequence, now, reason),
    )


def apply_crm_command(
    runtime: Runtime,
    lead_id: str,
    action: Literal["pause", "resume", "exit"],
    *,
    sequence: str | None = None,
    reason: str | None = None,
    until: datetime | None = None,
) -> Outcome:
    """A salesperson takes over in the CRM: pause, resume or exit the lead (every sequence, or
    `sequence`), under the lead's lock; repeating a command changes nothing more."""

    def act(engine: Engine, loaded: Loaded, now: datetime) -> Outcome:
        world = loaded.world
        if action == "pause":
            if sequence is None and world.lead.pause is not None:
                return Outcome()
            return engine.pause(
                world, now, sequence_id=sequence, until=until, reason=reason or "crm", by="crm"
            )
        if action == "resume":
            return engine.resume(world, now, sequence_id=sequence)
        outcome = Outcome()
        for sequence_id in sorted({e.sequence_id for e in world.active()}):
            if sequence in (None, sequence_id):
                outcome.extend(engine.exit(world, sequence_id, now, reason or "crm"))
        return outcome

    return with_lead(runtime, lead_id, act)


def set_switch(runtime: Runtime, name: str, value: str, by: str | None = None) -> None:
    with transaction(runtime.database) as session:
        write_switch(session, name, value, utcnow(), by)
