"""The lead as support sees it (`GET /v1/leads/{id}`, `nurture lead show`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from worker.engine import scoring
from worker.engine.state import Enrollment
from worker.kit.clock import utcnow
from worker.kit.errors import NotFound
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.leads import (
    enrollment_steps,
    lead_messages,
    lead_summary,
    recent_events,
)
from worker.store.tables import LeadRow, StepRunRow
from worker.store.worlds import load_world


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
            "enrollments": _enrollments(world.enrollments, enrollment_steps(session, row.id)),
        }


def _enrollments(enrollments: list[Enrollment], runs: list[StepRunRow]) -> list[dict[str, Any]]:
    """Every enrollment, active and ended, newest first, each with all its steps in file
    order (a step's `status` is its row's: `queued`, `claimed` and `sending` show as such)."""
    steps: dict[str | None, list[dict[str, Any]]] = {}
    for r in runs:
        steps.setdefault(r.enrollment_id, []).append(
            {
                "step": r.step_id,
                "status": r.status,
                "channel": r.channel,
                "due_at": _iso(r.due_at),
                "sent_at": _iso(r.sent_at),
                "reason": r.reason,
                "variant": r.variant,
            }
        )
    newest_first = sorted(enrollments, key=lambda e: (e.enrolled_at, e.id), reverse=True)
    return [
        {
            "id": e.id,
            "sequence": e.sequence_id,
            "key": e.key,
            "status": e.status,
            "paused": e.pause is not None,
            "version": e.version,
            "enrolled_at": e.enrolled_at.isoformat(),
            "ended_at": _iso(e.ended_at),
            "exit_reason": e.exit_reason,
            "steps": steps.get(e.id, []),
        }
        for e in newest_first
    ]


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None
