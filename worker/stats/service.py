"""Sequences and their funnels, as the operator API and `nurture stats` show them (SPEC §5).

Per step and variant: scheduled (waiting or in flight), sent, delivered, opened, clicked,
replied, failed, unknown, skipped by reason, unsubscribed, converted (the step was sent and its
enrollment reached the sequence's `goal:` event within `goal.within` of enrolling; calendar
days count as 24 hours here). Every number comes from a GROUP BY in `worker/store/stats.py`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlmodel import Session

from worker.definitions import models
from worker.definitions.catalog import SequenceDef
from worker.engine.schedule import step_channel
from worker.kit.errors import NotFound
from worker.runtime.process import Runtime
from worker.stats import repository as store
from worker.stats.repository import SCHEDULED, StepKey
from worker.store.db import transaction


class UnknownSequence(NotFound):
    pass


@dataclass
class StepFunnel:
    step: str
    variant: int | None
    channel: str | None
    scheduled: int = 0
    sent: int = 0
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    replied: int = 0
    failed: int = 0
    unknown: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    unsubscribed: int = 0
    converted: int = 0


def timing(step: models.Timing) -> dict[str, Any]:
    """The step's timing as the file writes it: {"day": 3}, {"after": "2h"}, {"at": "-24h"}."""
    if step.day is not None:
        return {"day": step.day}
    if step.at is not None:
        return {"at": str(step.at)}
    return {"after": str(step.after)}


def _steps(definition: SequenceDef) -> list[dict[str, Any]]:
    found = []
    for step in definition.model.steps:
        entry: dict[str, Any] = {"id": step.id, "channel": step_channel(step, None)}
        if isinstance(step, models.VariantsStep):
            entry["channel"] = None
            entry["variants"] = [
                {"variant": i, "channel": v.channel, "weight": v.weight}
                for i, v in enumerate(step.variants)
            ]
        found.append({**entry, "timing": timing(step)})
    return found


def describe(definition: SequenceDef, active: int) -> dict[str, Any]:
    model = definition.model
    enroll = model.enroll
    return {
        "id": definition.id,
        "name": model.name,
        "description": model.description,
        "version": definition.version,
        "steps": _steps(definition),
        "enroll": None
        if enroll is None
        else {"on": enroll.on, "if": enroll.if_, "key": enroll.key, "reenroll": enroll.reenroll},
        "exit_on": model.exit_on,
        "goal": None
        if model.goal is None
        else {"event": model.goal.event, "within": str(model.goal.within)},
        "active_enrollments": active,
    }


def sequences(runtime: Runtime) -> list[dict[str, Any]]:
    """Every loaded sequence, by id, with its count of active enrollments."""
    with transaction(runtime.database) as session:
        active = store.active_enrollments(session)
    catalog = runtime.catalog.sequences
    return [describe(catalog[i], active.get(i, 0)) for i in sorted(catalog)]


def _lines(definition: SequenceDef | None) -> list[StepFunnel]:
    """The funnel's lines in file order: one per step, one per variant of an A/B step."""
    if definition is None:
        return []
    lines = []
    for step in definition.model.steps:
        if isinstance(step, models.VariantsStep):
            lines += [StepFunnel(step.id, i, v.channel) for i, v in enumerate(step.variants)]
        else:
            lines.append(StepFunnel(step.id, None, step_channel(step, None)))
    return lines


def funnel(runtime: Runtime, sequence_id: str) -> dict[str, Any]:
    """The sequence's funnel; UnknownSequence when neither the files nor the database know
    it."""
    definition = runtime.catalog.sequence(sequence_id)
    if definition is None and not models.SEQUENCE_ID.match(sequence_id):
        raise UnknownSequence(f"no sequence {sequence_id[:100]!r}")
    goal = definition.model.goal if definition else None
    with transaction(runtime.database) as session:
        if definition is None and not store.known_sequence(session, sequence_id):
            raise UnknownSequence(f"no sequence {sequence_id}")
        runs = store.step_runs_by_status(session, sequence_id)
        delivered = store.delivered(session, sequence_id)
        engaged = store.engagement(session, sequence_id)
        attributed = store.attributed(session, sequence_id)
        enrollments = store.enrollments_by_status(session, sequence_id)
        converted_steps, converted = _conversions(session, sequence_id, goal)
    lines = {(line.step, line.variant): line for line in _lines(definition)}
    for run in runs:
        line = _line(lines, (run.step, run.variant), run.channel)
        _count_run(line, run)
    for counts, name in (
        (delivered, "delivered"),
        (engaged.get("email_opened", {}), "opened"),
        (engaged.get("email_clicked", {}), "clicked"),
        (attributed.get("replied", {}), "replied"),
        (attributed.get("unsubscribed", {}), "unsubscribed"),
        (converted_steps, "converted"),
    ):
        for key, count in counts.items():
            setattr(_line(lines, key, None), name, count)
    return {
        "sequence": sequence_id,
        "name": definition.model.name if definition else None,
        "goal": None if goal is None else {"event": goal.event, "within": str(goal.within)},
        "enrollments": {
            "total": sum(enrollments.values()),
            **{s: enrollments.get(s, 0) for s in ("active", "completed", "exited")},
            "converted": converted,
        },
        "steps": [asdict(line) for line in lines.values()],
    }


def _conversions(
    session: Session, sequence_id: str, goal: models.Goal | None
) -> tuple[dict[StepKey, int], int]:
    """Per step and in all: enrollments that reached the goal in its window."""
    if goal is None:
        return {}, 0
    within = goal.within.approximate().total_seconds()
    return (
        store.converted_steps(session, sequence_id, goal.event, within),
        store.converted_enrollments(session, sequence_id, goal.event, within),
    )


def _line(lines: dict[StepKey, StepFunnel], key: StepKey, channel: str | None) -> StepFunnel:
    """The line for a step; steps the file no longer has (and one-off sends) come after."""
    if key not in lines:
        lines[key] = StepFunnel(key[0], key[1], channel)
    return lines[key]


def _count_run(line: StepFunnel, run: store.RunCount) -> None:
    if run.status in SCHEDULED:
        line.scheduled += run.count
    elif run.status == "sent":
        line.sent += run.count
    elif run.status == "failed":
        line.failed += run.count
    elif run.status == "unknown":
        line.unknown += run.count
    elif run.status == "skipped":
        reason = run.reason or "unknown"
        line.skipped[reason] = line.skipped.get(reason, 0) + run.count
