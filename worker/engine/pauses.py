"""Pauses, by support or an `on:` reaction, of the whole lead or one enrollment: holding the
steps, moving them by the time spent paused, and ending pauses on resume or when their end comes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from worker.engine.context import Context
from worker.engine.runs import step_definition
from worker.engine.schedule import place
from worker.engine.state import Enrollment, Entry, LeadWorld, Outcome, Pause, StepStatus


def pause(
    context: Context,
    world: LeadWorld,
    now: datetime,
    *,
    sequence_id: str | None,
    until: datetime | None,
    reason: str | None,
    by: str | None,
) -> Outcome:
    """Support's pause: the whole lead (also holding enrollments made meanwhile) or one
    sequence."""
    outcome = Outcome()
    expire_pauses(world, now, outcome)
    if sequence_id is None:
        world.lead.pause = Pause(now, until, reason, by, "lead")
        outcome.entries.append(Entry(now, None, None, "pause", reason=reason))
        for enrollment in world.active():
            if enrollment.pause is None:
                hold(context, world, enrollment, now, until, reason, by, "lead")
        return outcome
    for enrollment in world.active():
        if enrollment.sequence_id == sequence_id and enrollment.pause is None:
            pause_enrollment(
                context, world, enrollment, now, until=until, reason=reason, by=by, outcome=outcome
            )
    return outcome


def pause_enrollment(
    context: Context,
    world: LeadWorld,
    enrollment: Enrollment,
    now: datetime,
    *,
    until: datetime | None,
    reason: str | None,
    by: str | None,
    outcome: Outcome,
) -> None:
    if enrollment.pause is not None:
        return
    hold(context, world, enrollment, now, until, reason, by, "enrollment")
    outcome.entries.append(
        Entry(now, enrollment.sequence_id, None, "pause", reason=reason, enrollment=enrollment.id)
    )


def hold(
    context: Context,
    world: LeadWorld,
    enrollment: Enrollment,
    now: datetime,
    until: datetime | None,
    reason: str | None,
    by: str | None,
    scope: Literal["lead", "enrollment"],
) -> None:
    """A pause with an end moves the steps at once, so nothing needs to wake up to resume."""
    shifted = (until - now) if until is not None and until > now else timedelta(0)
    enrollment.pause = Pause(now, until, reason, by, scope, shifted)
    if shifted:
        _shift(context, world, enrollment, shifted, now)


def resume(
    context: Context, world: LeadWorld, now: datetime, *, sequence_id: str | None
) -> Outcome:
    """Remaining steps shift by the time spent paused, except those timed by `anchor:`."""
    outcome = Outcome()
    if sequence_id is None and world.lead.pause is not None:
        world.lead.pause = None
        outcome.entries.append(Entry(now, None, None, "resume"))
    for enrollment in world.active():
        if enrollment.pause is None:
            continue
        if sequence_id is None or enrollment.sequence_id == sequence_id:
            _resume_enrollment(context, world, enrollment, now, outcome)
    return outcome


def _resume_enrollment(
    context: Context, world: LeadWorld, enrollment: Enrollment, now: datetime, outcome: Outcome
) -> None:
    pause = enrollment.pause
    assert pause is not None
    enrollment.pause = None
    _shift(context, world, enrollment, (now - pause.at) - pause.shifted, now)
    outcome.entries.append(
        Entry(now, enrollment.sequence_id, None, "resume", enrollment=enrollment.id)
    )


def expire_pauses(world: LeadWorld, now: datetime, outcome: Outcome) -> None:
    """Pauses whose end has come are over (their steps already moved when they began)."""
    lead_pause = world.lead.pause
    if lead_pause is not None and lead_pause.until is not None and now >= lead_pause.until:
        world.lead.pause = None
        outcome.entries.append(Entry(lead_pause.until, None, None, "resume"))
    for enrollment in world.active():
        pause = enrollment.pause
        if pause is not None and pause.until is not None and now >= pause.until:
            enrollment.pause = None
            outcome.entries.append(
                Entry(
                    pause.until,
                    enrollment.sequence_id,
                    None,
                    "resume",
                    enrollment=enrollment.id,
                )
            )


def _shift(
    context: Context, world: LeadWorld, enrollment: Enrollment, delta: timedelta, now: datetime
) -> None:
    definition = context.catalog.sequence(enrollment.sequence_id)
    enrollment.shift += delta
    for run in enrollment.steps:
        if run.status is not StepStatus.PENDING or run.nominal_at is None:
            continue
        if not run.anchored:
            run.nominal_at += delta
        step = step_definition(definition, run) if definition else None
        run.due_at = place(run.nominal_at, context.placement(definition, world.lead, run, step))
