"""What support and operators do to a lead: pause, resume, exit, what the CRM asks; and the
incident switches. Each action is one transaction per lead through the world unit of work
(worker/world/unit.py), recorded on the lead's timeline and, with who did it and why, in the
audit log (worker/accounts/audit.py). Enrolling by hand is enrollments.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from worker.accounts.audit import record_action
from worker.engine.core import Engine
from worker.engine.state import Outcome
from worker.kit.clock import utcnow
from worker.kit.errors import InvalidInput, NotFound
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.leads import (
    find_lead,
)
from worker.store.switches import write_switch
from worker.store.worlds import Loaded
from worker.world.unit import Act, act_locked

SWITCH_ACTIONS = {
    ("sends", "paused"): "hold_sends",
    ("sends", "running"): "release_sends",
    ("sequence", "paused"): "pause_sequence",
    ("sequence", "running"): "resume_sequence",
}
"""What the audit log calls turning a switch: `sends` or `sequence:<id>`, to a value."""


def lead_id_by_email(runtime: Runtime, email: str) -> str:
    with transaction(runtime.database) as session:
        row = find_lead(session, email=email)
        if row is None:
            raise NotFound(f"no lead with email {email}")
        return row.id


def acted(
    runtime: Runtime,
    lead_id: str,
    act: Act,
    *,
    actor: str,
    action: str,
    reason: str | None,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> Outcome:
    """Run `act` on the lead under its lock and, when it changed something, record who did it
    and why in the same transaction."""
    with transaction(runtime.database) as session:
        now = utcnow()
        outcome = act_locked(session, runtime.engine, lead_id, act, now)
        if outcome.entries:
            record_action(session, actor=actor, action=action, reason=reason, lead_id=lead_id,
                          target=target, details=details, now=now)  # fmt: skip
        return outcome


def pause_lead(
    runtime: Runtime,
    lead_id: str,
    *,
    sequence: str | None = None,
    reason: str | None = None,
    until: datetime | None = None,
    by: str | None = None,
    actor: str = "api",
) -> Outcome:
    return acted(
        runtime,
        lead_id,
        lambda engine, loaded, now: engine.pause(
            loaded.world, now, sequence_id=sequence, until=until, reason=reason, by=by or actor
        ),
        actor=actor,
        action="pause",
        reason=reason,
        target=sequence,
        details={"until": until.isoformat()} if until is not None else None,
    )


def resume_lead(
    runtime: Runtime,
    lead_id: str,
    *,
    sequence: str | None = None,
    reason: str | None = None,
    actor: str = "api",
) -> Outcome:
    return acted(
        runtime,
        lead_id,
        lambda engine, loaded, now: engine.resume(loaded.world, now, sequence_id=sequence),
        actor=actor,
        action="resume",
        reason=reason,
        target=sequence,
    )


def exit_lead(
    runtime: Runtime,
    lead_id: str,
    sequence: str | None = None,
    reason: str = "manual",
    *,
    actor: str = "api",
    note: str | None = None,
) -> Outcome:
    """End the lead's enrollment in `sequence`, or (None) every active enrollment. `reason`
    is the enrollments' exit reason; `note`, when given, is why in the audit log instead (a
    person's words, which the exit reason, counted by reports, should not hold)."""

    def act(engine: Engine, loaded: Loaded, now: datetime) -> Outcome:
        outcome = Outcome()
        for sequence_id in sorted({e.sequence_id for e in loaded.world.active()}):
            if sequence in (None, sequence_id):
                outcome.extend(engine.exit(loaded.world, sequence_id, now, reason))
        return outcome

    return acted(runtime, lead_id, act, actor=actor, action="exit", reason=note or reason,
                 target=sequence)  # fmt: skip


def apply_crm_command(
    runtime: Runtime,
    lead_id: str,
    action: Literal["pause", "resume", "exit"],
    *,
    sequence: str | None = None,
    reason: str | None = None,
    until: datetime | None = None,
    actor: str = "crm",
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

    return acted(runtime, lead_id, act, actor=actor, action=action, reason=reason,
                 target=sequence)  # fmt: skip


def set_switch(
    runtime: Runtime,
    name: str,
    value: str,
    by: str | None = None,
    *,
    actor: str = "api",
    reason: str | None = None,
) -> None:
    """Turn an operator switch (`sends`, `sequence:<id>`; `paused` or `running`) and record
    who did it and why, in one transaction."""
    kind = "sequence" if name.startswith("sequence:") else name
    action = SWITCH_ACTIONS.get((kind, value))
    if action is None:
        raise InvalidInput(f"{name} cannot be {value}: use paused or running")
    with transaction(runtime.database) as session:
        now = utcnow()
        write_switch(session, name, value, now, by or actor)
        record_action(session, actor=actor, action=action, reason=reason, target=name, now=now)
