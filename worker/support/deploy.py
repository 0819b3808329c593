"""Deploying sequence files to the enrollments in flight: new versions are recorded, every
enrollment moves to its new version by step id, and a removed sequence is retired on demand.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError

from worker.accounts.audit import record_action
from worker.definitions.catalog import SequenceDef
from worker.engine.core import Engine
from worker.engine.migration import Migration
from worker.engine.state import Outcome
from worker.kit.clock import utcnow
from worker.kit.errors import InvalidInput
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.leads import (
    leads_in_sequence,
)
from worker.store.versions import deployed_versions, record_versions
from worker.store.worlds import Loaded
from worker.world.unit import act_locked, with_lead


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


def deploy_if_changed(runtime: Runtime) -> Deployed | None:
    """`deploy` the loaded files when they differ from the recorded versions (at most every
    `look_every` seconds per process); None when nothing changed or another process is at it."""
    if not (runtime.due_to_look("deploy") and needs_deploy(runtime)):
        return None
    try:
        return deploy(runtime, reload=False)
    except IntegrityError:  # another dispatcher recorded the same versions first
        return None


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


def retire(
    runtime: Runtime, sequence_id: str, *, actor: str = "api", reason: str | None = None
) -> int:
    """End the enrollments of a sequence whose file was removed (reason `retired`): each
    lead's in its own transaction with its audit record, then the sequence's record."""
    if runtime.catalog.sequence(sequence_id) is not None:
        raise InvalidInput(f"{sequence_id} is still in sequences/: remove its file first")
    leads = leads_in(runtime, sequence_id)
    for lead_id in leads:
        with transaction(runtime.database) as session:
            now = utcnow()
            act_locked(session, runtime.engine, lead_id,
                       lambda e, loaded, at: _retire(loaded, sequence_id, at, e), now)  # fmt: skip
            record_action(session, actor=actor, action="retire", reason=reason, lead_id=lead_id,
                          target=sequence_id, now=now)  # fmt: skip
    with transaction(runtime.database) as session:
        record_action(session, actor=actor, action="retire_sequence", reason=reason,
                      target=f"sequence:{sequence_id}", details={"leads": len(leads)},
                      now=utcnow())  # fmt: skip
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
