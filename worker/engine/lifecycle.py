"""How an enrollment moves on: a step is scheduled or finished, the next `after:` step released,
the enrollment completed or exited.

Scheduling and finishing live together because they call each other: finishing a step releases
the next one, and scheduling that one may finish it at once (`past`, `window`), and so on."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from worker.definitions.catalog import SequenceDef
from worker.engine import timing
from worker.engine.context import Context
from worker.engine.runs import SCORING, owner
from worker.engine.schedule import place
from worker.engine.state import Enrollment, Entry, LeadWorld, Outcome, StepRun, StepStatus

ACTION_OF_CHANNEL = {"crm_task": "crm_task", "notify": "notify"}


def schedule(
    context: Context,
    world: LeadWorld,
    enrollment: Enrollment,
    definition: SequenceDef,
    run: StepRun,
    step: Any,
    nominal: datetime,
    now: datetime,
    outcome: Outcome,
    *,
    past_before: datetime | None = None,
) -> None:
    """Give a run its nominal and due time, or finish it as `past` or `window`."""
    run.nominal_at = nominal
    if nominal < (past_before or enrollment.enrolled_at):
        finish(context, world, run, StepStatus.SKIPPED, "past", now, outcome)
        return
    due = place(nominal, context.placement(definition, world.lead, run, step))
    negative = getattr(step, "at", None) is not None and step.at.negative
    if due is None or (negative and due > enrollment.anchor_at):
        finish(context, world, run, StepStatus.SKIPPED, "window", now, outcome)
        return
    run.due_at = due


def finish(
    context: Context,
    world: LeadWorld,
    run: StepRun,
    status: StepStatus,
    reason: str | None,
    at: datetime,
    outcome: Outcome,
    *,
    subject: str | None = None,
) -> None:
    run.status, run.reason, run.finished_at, run.due_at = status, reason, at, None
    enrollment = owner(world, run)
    sequence = enrollment.sequence_id if enrollment else SCORING
    owner_id = enrollment.id if enrollment else None
    if status is StepStatus.SENT:
        action = ACTION_OF_CHANNEL.get(run.channel or "", "send")
        channel = run.channel if action == "send" else None
        outcome.entries.append(
            Entry(at, sequence, run.step_id, action, channel, None, subject, owner_id)
        )
    elif reason != "exited":
        outcome.entries.append(
            Entry(at, sequence, run.step_id, "skip", run.channel, reason, None, owner_id)
        )
    if enrollment is None:
        return
    _release_next(context, world, enrollment, run, at, outcome)
    complete_if_done(enrollment, at, outcome)


def _release_next(
    context: Context,
    world: LeadWorld,
    enrollment: Enrollment,
    run: StepRun,
    at: datetime,
    outcome: Outcome,
) -> None:
    """An `after:` step counts from when the previous step in file order finished."""
    definition = context.catalog.sequence(enrollment.sequence_id)
    if definition is None or run.kind != "step" or not enrollment.active:
        return
    index = definition.step_index(run.step_id)
    if index is None or index + 1 >= len(definition.model.steps):
        return
    step = definition.model.steps[index + 1]
    following = enrollment.step(step.id)
    if step.after is None or following is None or following.status is not StepStatus.PENDING:
        return
    if following.nominal_at is not None:
        return
    nominal = timing.add_duration(at, step.after, context.schedule_tz(definition, world.lead))
    schedule(
        context,
        world,
        enrollment,
        definition,
        following,
        step,
        nominal,
        at,
        outcome,
        past_before=at,
    )


def complete_if_done(enrollment: Enrollment, at: datetime, outcome: Outcome) -> None:
    if enrollment.active and all(run.finished for run in enrollment.steps):
        enrollment.status = "completed"
        enrollment.ended_at = at
        outcome.entries.append(
            Entry(at, enrollment.sequence_id, None, "complete", enrollment=enrollment.id)
        )


def exit_enrollment(enrollment: Enrollment, reason: str, now: datetime, outcome: Outcome) -> None:
    """Final: pending steps finish `exited`; a step already claimed cannot be recalled."""
    enrollment.status = "exited"
    enrollment.exit_reason = reason
    enrollment.ended_at = now
    for run in enrollment.steps:
        # a crm_task or notify reaction is already decided: `- crm_task … - exit: true`
        # must still reach the CRM
        if run.status is StepStatus.PENDING and run.kind != "action":
            run.status, run.reason, run.finished_at, run.due_at = (
                StepStatus.SKIPPED,
                "exited",
                now,
                None,
            )
    outcome.entries.append(
        Entry(now, enrollment.sequence_id, None, "exit", reason=reason, enrollment=enrollment.id)
    )
    outcome.exited.append(enrollment.sequence_id)
