"""The lead as support sees it (`GET /v1/leads/{id}`, `nurture lead show`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session

from worker.engine import scoring
from worker.engine.state import Enrollment, LeadWorld
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
from worker.store.tables import EventRow, LeadRow, MessageRow, StepRunRow
from worker.store.worlds import load_world


@dataclass(frozen=True)
class LeadData:
    """Everything support sees of a lead, read in one transaction: the rows and the world the
    API's view (below) and the console's lead page (timeline.py) are both made from."""

    row: LeadRow
    world: LeadWorld
    now: datetime
    score: float
    explanation: list[scoring.Contribution]
    messages: list[MessageRow]
    events: list[EventRow]
    runs: list[StepRunRow]
    """Every step run of every enrollment, active or ended, in file order."""


def read_lead(runtime: Runtime, session: Session, lead_id: str, now: datetime) -> LeadData:
    """The lead's rows and world; NotFound when there is no such lead."""
    row = session.get(LeadRow, lead_id) if len(lead_id) <= 32 and "\x00" not in lead_id else None
    if row is None:
        raise NotFound(f"no lead {lead_id[:32]}")
    world = load_world(session, row, now).world
    rules = runtime.engine.rules
    return LeadData(
        row=row,
        world=world,
        now=now,
        score=scoring.score_at(world.lead.score, rules, now),
        explanation=scoring.explain(world.lead.score, rules, now),
        messages=lead_messages(session, row.id),
        events=recent_events(session, row.id),
        runs=enrollment_steps(session, row.id),
    )


def lead_view(runtime: Runtime, lead_id: str) -> dict[str, Any]:
    """The lead as support sees it: identities, consent, score, enrollments and their steps."""
    with transaction(runtime.database) as session:
        data = read_lead(runtime, session, lead_id, utcnow())
        row, world = data.row, data.world
        return {
            **lead_summary(row),
            "attributes": row.attributes,
            "consent": row.consent,
            "score": data.score,
            "score_explanation": [
                {
                    "event": c.event_type,
                    "at": c.at.isoformat(),
                    "points": c.points,
                    "current": c.current,
                }
                for c in data.explanation
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
                for m in data.messages
            ],
            "events": [
                {
                    "id": e.id,
                    "type": e.type,
                    "occurred_at": e.occurred_at.isoformat(),
                    "properties": e.properties,
                    "source": e.source,
                }
                for e in data.events
            ],
            "enrollments": _enrollments(world.enrollments, data.runs),
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
