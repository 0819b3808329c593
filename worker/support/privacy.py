"""A person's rights over their data: export all of it, or erase them (SPEC §5).

Each is one transaction under the lead's lock, so no event, send or support action can
interleave with half an erasure. Erasure ends the lead's active enrollments (reason `erased`)
through the engine, as any exit would, then clears the person from every row while keeping
the rows themselves: counts and funnels stay as they were.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from worker.accounts.audit import as_json as action_json
from worker.accounts.audit import lead_actions, record_action
from worker.engine.state import Outcome
from worker.kit.clock import utcnow
from worker.kit.errors import NotFound
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.locks import lock_lead
from worker.store.worlds import Loaded, load_world
from worker.support import repository as store
from worker.support.retention import pruned_before
from worker.world.unit import finish

ERASED_REASON = "erased"
ID_LENGTH = 32


def _lookup(lead_id: str) -> str:
    """The id, or NotFound for one no lead can have (too long, a NUL byte PostgreSQL would
    refuse with an error instead of an answer)."""
    if len(lead_id) > ID_LENGTH or "\x00" in lead_id:
        raise NotFound(f"no lead {lead_id[:ID_LENGTH]!r}")
    return lead_id


def erase(runtime: Runtime, lead_id: str, *, actor: str = "api", reason: str | None = None) -> None:
    """Forget the person behind `lead_id`; NotFound when there is no such lead. Erasing an
    erased lead changes nothing more. The audit log keeps that `actor` erased the lead's id,
    and nothing of the person."""
    with transaction(runtime.database) as session:
        row = lock_lead(session, _lookup(lead_id))
        if row is None:
            raise NotFound(f"no lead {lead_id}")
        now = utcnow()
        first_time = not row.erased
        loaded = load_world(session, row, now)
        finish(session, runtime.engine, loaded, _end_enrollments(runtime, loaded, now), now)
        names = store.identities(row)
        store.forget_lead(row, now)
        session.flush()  # the bulk statements below run after every change above is written
        store.scrub(session, lead_id, names, now)
        if first_time:
            record_action(session, actor=actor, action="erase", reason=reason, lead_id=lead_id,
                          now=now)  # fmt: skip


def _end_enrollments(runtime: Runtime, loaded: Loaded, now: datetime) -> Outcome:
    outcome = Outcome()
    for sequence_id in sorted({e.sequence_id for e in loaded.world.active()}):
        outcome.extend(runtime.engine.exit(loaded.world, sequence_id, now, ERASED_REASON))
    return outcome


def export(runtime: Runtime, lead_id: str) -> dict[str, Any]:
    """Every row held on the lead, as JSON: the lead, its events, its enrollments with their
        steps, step runs outside an enrollment (`scoring_steps`: a segment's actions), messages
        with their bodies and the copies of emails as sent, the timeline, the changes queued for
        the CRM, and who acted on the lead (`actions`, newest first: who, when, why). `pruned` says
    what retention deleted before it could be exported (`events_before`, `crm_changes_before`:
    the cutoff times), when the lead is older than a cutoff."""
    with transaction(runtime.database) as session:
        # under the lock: a consistent picture, not one taken halfway through a send
        row = lock_lead(session, _lookup(lead_id))
        if row is None:
            raise NotFound(f"no lead {lead_id}")
        found = store.held(session, lead_id)
        pruned = {
            label: cutoff
            for label, cutoff in pruned_before(session).items()
            if row.created_at < datetime.fromisoformat(cutoff)
        }
        steps: dict[str | None, list[dict[str, Any]]] = {}
        for run in found.step_runs:
            steps.setdefault(run.enrollment_id, []).append(store.as_json(run))
        return {
            "exported_at": utcnow().isoformat(),
            "lead": store.as_json(row),
            "events": [store.as_json(e) for e in found.events],
            "enrollments": [
                {**store.as_json(e), "steps": steps.get(e.id, [])} for e in found.enrollments
            ],
            "scoring_steps": steps.get(None, []),
            "messages": [store.message_json(m) for m in found.messages],
            "timeline": [store.as_json(t) for t in found.timeline],
            "crm_changes": [store.as_json(c) for c in found.crm_changes],
            "actions": [action_json(a) for a in lead_actions(session, lead_id, limit=10_000)],
            "pruned": pruned,
        }
