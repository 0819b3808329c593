"""What support and operators do: pause, resume and exit a lead; hold a sequence or every
send; deploy new sequence files to the enrollments in flight; retire a removed sequence.
Each action is one transaction per lead, recorded on the lead's timeline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text, update
from sqlmodel import Session, col

from worker.dispatch import db_time
from worker.engine import scoring
from worker.engine.core import Engine, Migration
from worker.engine.state import Outcome
from worker.ingest import finish
from worker.runtime import Runtime
from worker.spec.catalog import SequenceDef
from worker.store.db import transaction
from worker.store.leads import find_lead
from worker.store.tables import EnrollmentRow, LeadRow, SequenceVersionRow, SwitchRow
from worker.store.worlds import Loaded, load_world, lock_lead


class NotFound(LookupError):
    pass


def now_utc() -> datetime:
    return datetime.now(UTC)


def with_lead(
    runtime: Runtime, lead_id: str, act: Callable[[Engine, Loaded, datetime], Outcome]
) -> Outcome:
    """Lock the lead, run one engine action on its world, write it all back."""
    with transaction(runtime.database) as session:
        lead_row = lock_lead(session, lead_id)
        if lead_row is None:
            raise NotFound(f"no lead {lead_id}")
        now = now_utc()
        loaded = load_world(session, lead_row, now)
        outcome = act(runtime.engine, loaded, now)
        finish(session, runtime.engine, loaded, outcome, now)
        return outcome


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


def set_switch(runtime: Runtime, name: str, value: str, by: str | None = None) -> None:
    with transaction(runtime.database) as session:
        row = session.get(SwitchRow, name)
        if row is None:
            row = SwitchRow(name=name, value=value, changed_at=now_utc())
        row.value, row.changed_at, row.changed_by = value, now_utc(), by
        session.add(row)
        if value == "running":
            _release_holds(session, name)


def _release_holds(session: Session, name: str) -> None:
    """Steps held by the switch are due again at once."""
    hold = "sends_paused" if name == "sends" else "sequence_paused"
    condition = "" if name == "sends" else " AND sequence_id = :sequence"
    session.execute(
        text(
            "UPDATE step_runs SET due_at = :now WHERE status = 'pending' AND due_at IS NULL "
            f"AND hold = :hold{condition}"
        ),
        {"now": _db_now(session), "hold": hold, "sequence": name.removeprefix("sequence:")},
    )
    session.execute(
        update(SwitchRow).where(col(SwitchRow.name) == name).values(changed_at=now_utc())
    )


def _db_now(session: Session) -> Any:
    return db_time(session, now_utc())


@dataclass(frozen=True)
class Deployed:
    changed: dict[str, Migration]
    removed: list[str]
    enrollments: int


def needs_deploy(runtime: Runtime) -> bool:
    """The loaded files differ from the versions the database last recorded."""
    with transaction(runtime.database) as session:
        known = {
            r.sequence_id: r.version
            for r in session.execute(select(SequenceVersionRow)).scalars()
            if r.present
        }
    loaded = {s: d.version for s, d in runtime.catalog.sequences.items()}
    return known != loaded


def deploy(runtime: Runtime, *, reload: bool = True) -> Deployed:
    """Reload the files (all or nothing) and move every enrollment in flight to the new
    versions by step id. A sequence whose file is gone keeps its enrollments on hold."""
    catalog = runtime.reload() if reload else runtime.catalog
    now = now_utc()
    changed: dict[str, Migration] = {}
    moved = 0
    with transaction(runtime.database) as session:
        known = {r.sequence_id: r for r in session.execute(select(SequenceVersionRow)).scalars()}
        for sequence_id, definition in catalog.sequences.items():
            row = known.get(sequence_id)
            if row is None:
                row = SequenceVersionRow(
                    sequence_id=sequence_id, version=definition.version, loaded_at=now
                )
            if row.version != definition.version:
                changed[sequence_id] = Migration()
            row.version, row.git_commit, row.loaded_at, row.present = (
                definition.version, runtime.commit, now, True,
            )  # fmt: skip
            session.add(row)
        removed = [s for s, r in known.items() if s not in catalog.sequences and r.present]
        for sequence_id in removed:
            known[sequence_id].present = False
            session.add(known[sequence_id])
    for sequence_id in changed:
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
        rows = session.execute(
            select(col(EnrollmentRow.lead_id))
            .where(col(EnrollmentRow.sequence_id) == sequence_id)
            .where(col(EnrollmentRow.status) == "active")
            .distinct()
        ).scalars()
        return list(rows)


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
        now = now_utc()
        loaded = load_world(session, row, now)
        world = loaded.world
        rules = runtime.engine.rules
        return {
            "id": row.id,
            "email": row.email,
            "phone": row.phone,
            "external_id": row.external_id,
            "first_name": row.first_name,
            "last_name": row.last_name,
            "timezone": row.timezone,
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
