"""The lead as support sees it (`GET /v1/leads/{id}`, `nurture lead show`)."""

from __future__ import annotations

from typing import Any

from worker.engine import scoring
from worker.kit.clock import utcnow
from worker.kit.errors import NotFound
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.leads import (
    lead_messages,
    lead_summary,
    recent_events,
)
from worker.store.tables import LeadRow
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
