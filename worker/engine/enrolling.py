"""Enrolling a lead in a sequence: its condition, key and re-enroll rule decide, then the
enrollment's step runs are created, scheduled and held by a lead pause already in force."""

from __future__ import annotations

from datetime import datetime

from worker.definitions import models
from worker.definitions.catalog import SequenceDef
from worker.engine.context import Context
from worker.engine.expressions import as_datetime, safe_eval, safe_true
from worker.engine.lifecycle import complete_if_done, exit_enrollment, schedule
from worker.engine.pauses import hold
from worker.engine.schedule import choose_variant, nominal_time, step_channel
from worker.engine.state import (
    Enrollment,
    Entry,
    Event,
    LeadWorld,
    Outcome,
    StepRun,
    StepStatus,
)


def enroll(
    context: Context,
    world: LeadWorld,
    definition: SequenceDef,
    event: Event | None,
    now: datetime,
    *,
    outcome: Outcome | None = None,
    manual: bool = False,
) -> Enrollment | None:
    """Enroll the lead if the sequence's condition, key and re-enroll rule allow it."""
    outcome = outcome if outcome is not None else Outcome()
    model = definition.model
    names = context.names(world, None, event, now)
    rule = model.enroll
    key: str | None = None
    if rule is not None and not manual and rule.if_ and not safe_true(rule.if_, names):
        return None
    if rule is not None and rule.key is not None:
        value = safe_eval(rule.key, names)
        if value in (None, ""):
            return None
        key = str(value)
    previous = [e for e in world.enrollments if e.sequence_id == definition.id and e.key == key]
    active = [e for e in previous if e.active]
    reenroll = rule.reenroll if rule is not None else "never"
    if active:
        if reenroll != "always" or manual:
            return None
        for enrollment in active:
            exit_enrollment(enrollment, "reenrolled", now, outcome)
    elif previous and reenroll == "never" and not manual:
        return None
    return _start(context, world, definition, event, key, now, outcome)


def enroll_by_name(
    context: Context,
    world: LeadWorld,
    sequence_id: str,
    event: Event | None,
    now: datetime,
    outcome: Outcome,
) -> None:
    definition = context.catalog.sequence(sequence_id)
    if definition is not None:
        enroll(context, world, definition, event, now, outcome=outcome)


def _start(
    context: Context,
    world: LeadWorld,
    definition: SequenceDef,
    event: Event | None,
    key: str | None,
    now: datetime,
    outcome: Outcome,
) -> Enrollment | None:
    enrolled_at = event.occurred_at if event else now
    anchor_at = enrolled_at
    model = definition.model
    if model.anchor is not None:
        found = as_datetime(safe_eval(model.anchor, context.names(world, None, event, now)))
        if found is None:
            outcome.entries.append(Entry(now, definition.id, None, "skip", reason="anchor"))
            return None
        anchor_at = found
    enrollment = Enrollment(
        id=context.new_id(),
        sequence_id=definition.id,
        enrolled_at=enrolled_at,
        anchor_at=anchor_at,
        version=definition.version,
        key=key,
        anchored=model.anchor is not None,
        event=event,
        events_seen=[event.type] if event else [],
    )
    world.enrollments.append(enrollment)
    outcome.entries.append(Entry(now, definition.id, None, "enroll", enrollment=enrollment.id))
    outcome.enrolled.append(definition.id)
    tz = context.schedule_tz(definition, world.lead)
    for index, step in enumerate(model.steps):
        variant = None
        if isinstance(step, models.VariantsStep):
            weights = [v.weight for v in step.variants]
            variant = choose_variant(world.lead.id, definition.id, step.id, weights)
        enrollment.steps.append(
            StepRun(
                step_id=step.id,
                channel=step_channel(step, variant),
                variant=variant,
                version=definition.version,
                anchored=enrollment.anchored and (step.after is None or index == 0),
            )
        )
    # every run exists before any is scheduled: a `past` skip must not complete the rest
    for index, (step, run) in enumerate(zip(model.steps, list(enrollment.steps), strict=True)):
        previous = anchor_at if index == 0 else None
        nominal = nominal_time(step, anchor_at, previous, tz)
        if nominal is not None and run.status is StepStatus.PENDING:
            schedule(context, world, enrollment, definition, run, step, nominal, now, outcome)
    lead_pause = world.lead.pause
    if lead_pause is not None and lead_pause.active(now):
        hold(
            context,
            world,
            enrollment,
            now,
            lead_pause.until,
            lead_pause.reason,
            lead_pause.by,
            "lead",
        )
    complete_if_done(enrollment, now, outcome)
    return enrollment
