"""The scoring file at work: an event's points, and a segment change, which is emitted as
`segment_changed` and, on entry from below, runs the segment's actions once."""

from __future__ import annotations

from datetime import datetime

from worker.definitions import models
from worker.engine import scoring
from worker.engine.context import Context
from worker.engine.runs import unique
from worker.engine.state import Event, LeadWorld, Outcome, StepRun


def score(
    context: Context, world: LeadWorld, event: Event, now: datetime, outcome: Outcome
) -> list[str]:
    """Points for the event (or decay alone); returns the sequences a segment action enrolls in."""
    if context.catalog.scoring is None:
        return []
    change = scoring.add_points(
        world.lead.score, context.rules, event.type, event.occurred_at, event.id
    )
    if change is None:
        change = scoring.evaluate_segment(world.lead.score, context.rules, now)
    return segment_changed(context, world, change, event, now, outcome)


def segment_changed(
    context: Context,
    world: LeadWorld,
    change: scoring.SegmentChange | None,
    event: Event | None,
    at: datetime,
    outcome: Outcome,
) -> list[str]:
    """Emit segment_changed; on entry from below, run the segment's actions once."""
    if change is None or context.catalog.scoring is None:
        return []
    outcome.emitted.append(
        Event(
            "segment_changed",
            at,
            {"from": change.from_segment, "to": change.to_segment},
        )
    )
    if not change.upward or change.to_segment is None:
        return []
    enrolls: list[str] = []
    actions = context.catalog.scoring.on_segment.get(change.to_segment, [])
    for index, action in enumerate(actions):
        if isinstance(action, models.EnrollReaction):
            enrolls.append(action.enroll)
            continue
        channel = "crm_task" if isinstance(action, models.CrmTaskReaction) else "notify"
        base = f"segment.{change.to_segment}.{index}"
        run = StepRun(
            step_id=unique(base, world.actions),
            kind="action",
            channel=channel,
            due_at=at,
            nominal_at=at,
            event=event,
        )
        world.actions.append(run)
    return enrolls
