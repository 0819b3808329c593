"""What support and operators do: pause, resume and exit a lead; hold a sequence or every
send; deploy new sequence files to the enrollments in flight; retire a removed sequence.
Each action is one transaction per lead, recorded on the lead's timeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from worker.definitions.catalog import SequenceDef
from worker.engine import scoring
from worker.engine.core import Engine
from worker.engine.migration import Migration
from worker.engine.state import Outcome
from worker.ingest.repository import find_or_create
from worker.ingest.schemas import LeadIn
from worker.kit.clock import utcnow
from worker.kit.errors import Conflict, NotFound
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.leads import (
    find_lead,
    lead_messages,
    lead_summary,
    leads_in_sequence,
    recent_events,
)
from worker.store.switches import write_switch
from worker.store.tables import LeadRow
from worker.store.versions import deployed_versions, record_versions
from worker.store.worlds import Loaded, load_world
from worker.world.unit import act_locked, with_lead


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


def enroll_lead(runtime: Runtime, lead: LeadIn, sequence: str) -> tuple[str, Outcome]:
    """Enroll a lead by hand, created when new: its id and what the enrollment did. Raises
    NotFound for an unknown sequence, Conflict when the lead is already active in it."""
    definition = runtime.catalog.sequence(sequence)
    if definition is None:
        raise NotFound(f"no sequence {sequence}")

    def enroll(engine: Engine, loaded: Loaded, now: datetime) -> Outcome:
        outcome = Outcome()
        if engine.enroll(loaded.world, definition, None, now, outcome=outcome, manual=True) is None:
            raise Conflict(f"already enrolled in {sequence}")
        return outcome

    now = utcnow()
    with transaction(runtime.database) as session:
        row = find_or_create(session, lead, now, "api")
        session.flush()
        return row.id, act_locked(session, runtime.engine, row.id, enroll, now)


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


@dataclass(frozen=True)
class Deployed:
    changed: dict[str, Migration]
    removed: list[str]
    enrollments: int


def needs_deploy(runtime: Runtime) -> bool:
    """The loaded files differ from the versions the database last recorded."""
    with transaction(runtime.database) as session:
        known = deployed_versions(session)
    return known != {s: d.version for s, d in runtime.catalog.sequences.items()}


def deploy(runtime: Runtime, *, reload: bool = True) -> Deployed:
    """Reload the files (all or nothing) and move every enrollment in flight to the new
    versions by step id. A sequence whose file is gone keeps its enrollments on hold."""
    catalog = runtime.reload() if reload else runtime.catalog
    with transaction(runtime.database) as session:
        changed_ids, removed = record_versions(session, catalog, runtime.commit, utcnow())
    changed: dict[str, Migration] = {}
    moved = 0
    for sequence_id in changed_ids:
        total = Migration()
        for lead_id in leads_in(runtime, sequence_id):
            total = _add(total, _migrate_lead(runtime, lead_id, catalog.sequences[sequence_id]))
            moved += 1
        changed[sequence_id] = total
    return Deployed(changed, removed, moved)


def _migrate_lead(runtime: Runtime, lead_id: str, definition: SequenceDef) -> Migration:
    total = Migration()

    def migrate(engine: Engine, loaded: Loaded, at: datetime) -> Outcome:
        nonlocal total
        outcome = Outcome()
        for enrollment in loaded.world.active():
            if enrollment.sequence_id == definition.id:
                found, migration = engine.migrate(loaded.world, enrollment, definition, at)
                outcome.extend(found)
                total = _add(total, migration)
        return outcome

    with_lead(runtime, lead_id, migrate)
    return total


def retire(runtime: Runtime, sequence_id: str) -> int:
    """End the enrollments of a sequence whose file was removed (reason `retired`)."""
    if runtime.catalog.sequence(sequence_id) is not None:
        raise ValueError(f"{sequence_id} is still in sequences/: remove its file first")
    leads = leads_in(runtime, sequence_id)
    for lead_id in leads:
        with_lead(runtime, lead_id, lambda e, loaded, now: _retire(loaded, sequence_id, now, e))
    return len(leads)


def _retire(loaded: Loaded, sequence_id: str, now: datetime, engine: Engine) -> Outcome:
    # the engine's exit needs no definition: it ends the enrollment and its pending steps
    return engine.exit(loaded.world, sequence_id, now, "retired")


def leads_in(runtime: Runtime, sequence_id: str) -> list[str]:
    with transaction(runtime.database) as session:
        return leads_in_sequence(session, sequence_id)


def _add(a: Migration, b: Migration) -> Migration:
    return Migration(
        a.retimed + b.retimed, a.skipped + b.skipped, a.removed + b.removed, a.added + b.added
    )


def lead_view(runtime: Runtime, lead_id: str) -> dict[str, Any]:
    """The lead as support sees it: identities, consent, score, enrollments and their steps."""
    with transaction(runtime.database) as session:
        row = session.get(LeadRow, lead_id)
        if row is None:
            raise NotFound(f"no lead {lead_id}")
        now = utcnow()
        loaded = load_world(session, row, now)
        world = loaded.world
        rules = runtime.engine.rules
        return {
            **lead_summary(row),
            "attributes": row.attributes,
            "consent": row.consent,
            "score": scoring.score_at(world.lead.score, rules, now),
            "score_explanation": [
                {
                    "event": c.event_type,
                    "at": c.at.isoformat(),
                    "points": c.points,
                    "current": c.current,
                }
                for c in scoring.explain(world.lead.score, rules, now)
            ],
            "segment": world.lead.score.segment,
            "suppressions": row.suppressions,
            "paused": row.pause,
            "messages": [
                {
                    "step_run": m.step_run_id,
                    "channel": m.channel,
                    "to": m.to,
                    "subject": m.subject,
                    "status": m.status,
                    "segments": m.segments,
                    "sent_at": m.sent_at.isoformat(),
                }
                for m in lead_messages(session, row.id)
            ],
            "events": [
                {
                    "id": e.id,
                    "type": e.type,
                    "occurred_at": e.occurred_at.isoformat(),
                    "properties": e.properties,
                    "source": e.source,
                }
                for e in recent_events(session, row.id)
            ],
            "enrollments": [
                {
                    "id": e.id,
                    "sequence": e.sequence_id,
                    "key": e.key,
                    "status": e.status,
                    "paused": e.pause is not None,
                    "version": e.version,
                    "steps": [
                        {
                            "step": r.step_id,
                            "status": loaded.run_rows[r.id].status if r.id else r.status.value,
                            "channel": r.channel,
                            "due_at": r.due_at.isoformat() if r.due_at else None,
                            "sent_at": r.sent_at.isoformat() if r.sent_at else None,
                            "reason": r.reason,
                            "variant": r.variant,
                        }
                        for r in e.steps
                    ],
                }
                for e in world.enrollments
            ],
        }
