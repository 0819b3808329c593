"""Following a sequence edit: re-timing an enrollment in flight onto the new version, matched by
step id, and counting what that did (`Migration`, which `nurture diff` reports too)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from worker.definitions import models
from worker.definitions.catalog import SequenceDef
from worker.engine.context import Context
from worker.engine.lifecycle import complete_if_done, finish, schedule
from worker.engine.schedule import choose_variant, nominal_time, step_channel
from worker.engine.state import Enrollment, LeadWorld, Outcome, StepRun, StepStatus


@dataclass(frozen=True)
class Migration:
    """What a sequence change did to one enrollment in flight (for `nurture diff` too)."""

    retimed: int = 0
    skipped: int = 0
    removed: int = 0
    added: int = 0


def migrate(
    context: Context,
    world: LeadWorld,
    enrollment: Enrollment,
    definition: SequenceDef,
    now: datetime,
) -> tuple[Outcome, Migration]:
    """Follow a new version by step id: removed steps finish `removed`, retimed ones move,
    new ones already past are skipped; nothing already sent is touched."""
    outcome = Outcome()
    retimed = skipped = removed = added = 0
    tz = context.schedule_tz(definition, world.lead)
    old_runs = {run.step_id: run for run in enrollment.steps}
    new_ids = {step.id for step in definition.model.steps}
    for old in enrollment.steps:
        gone = (old.kind == "step" and old.step_id not in new_ids) or (
            old.kind == "send" and definition.one_off(old.step_id) is None
        )
        if gone and old.status is StepStatus.PENDING:
            finish(context, world, old, StepStatus.SKIPPED, "removed", now, outcome)
            removed += 1
    ordered: list[StepRun] = []
    previous_finished: datetime | None = enrollment.anchor_at
    shift = enrollment.shift
    for index, step in enumerate(definition.model.steps):
        run = old_runs.get(step.id)
        if run is None:
            run = StepRun(step_id=step.id, version=definition.version, channel=None)
            variant = None
            if isinstance(step, models.VariantsStep):
                variant = choose_variant(
                    world.lead.id, definition.id, step.id, [v.weight for v in step.variants]
                )
            run.variant, run.channel = variant, step_channel(step, variant)
            added += 1
        ordered.append(run)
        run.anchored = enrollment.anchored and (step.after is None or index == 0)
        if run.status is StepStatus.PENDING:
            run.version = definition.version
            nominal = nominal_time(step, enrollment.anchor_at, previous_finished, tz)
            if nominal is not None and not run.anchored:
                nominal += shift
            is_new = step.id not in old_runs
            if nominal is None:
                run.nominal_at = run.due_at = None
            elif is_new and nominal < now:
                run.nominal_at = nominal
                finish(context, world, run, StepStatus.SKIPPED, "past", now, outcome)
                skipped += 1
            else:
                before = run.nominal_at
                schedule(
                    context,
                    world,
                    enrollment,
                    definition,
                    run,
                    step,
                    nominal,
                    now,
                    outcome,
                    past_before=enrollment.enrolled_at,
                )
                if not is_new and before != run.nominal_at:
                    retimed += 1
        previous_finished = run.finished_at if run.finished else None
    # removed steps stay (finished, reason `removed`) so the record keeps them
    kept = {id(run) for run in ordered}
    enrollment.steps = ordered + [r for r in enrollment.steps if id(r) not in kept]
    enrollment.version = definition.version
    complete_if_done(enrollment, now, outcome)
    return outcome, Migration(retimed, skipped, removed, added)
