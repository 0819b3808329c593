"""Sequences and their funnels, as the operator API and `nurture stats` show them (SPEC §5).

Per step and variant: scheduled (waiting or in flight), sent, delivered, opened, clicked,
replied, failed, unknown, skipped by reason, unsubscribed, converted (the step was sent and its
enrollment reached the sequence's `goal:` event within `goal.within` of enrolling; calendar
days count as 24 hours here). Every number is a sum of the outcome counters
(worker/stats/counts.py), the steps waiting and in doubt are read live: nothing scans history.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from worker.definitions import models
from worker.definitions.catalog import SequenceDef
from worker.engine.schedule import step_channel
from worker.kit.errors import NotFound
from worker.runtime.process import Runtime
from worker.stats import counts
from worker.stats import repository as store
from worker.stats.counts import StepKey
from worker.store import counter_reads
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
    """Every loaded sequence, by id, with its count of active enrollments (from the
    counters: entered less completed and exited)."""
    with transaction(runtime.database) as session:
        found = counter_reads.enrollments_by_sequence(session)
    catalog = runtime.catalog.sequences
    return [describe(catalog[i], _active(found.get(i, {}))) for i in sorted(catalog)]


def _active(enrollments: dict[str, int]) -> int:
    ended = enrollments.get("completed", 0) + enrollments.get("exited", 0)
    return enrollments.get("entered", 0) - ended


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
    """The sequence's funnel over all time, from the outcome counters (`scheduled` here is
    what waits or is in flight now); UnknownSequence when neither the files nor the database
    know it."""
    definition = runtime.catalog.sequence(sequence_id)
    if definition is None and not models.SEQUENCE_ID.match(sequence_id):
        raise UnknownSequence(f"no sequence {sequence_id[:100]!r}")
    goal = definition.model.goal if definition else None
    with transaction(runtime.database) as session:
        if definition is None and not store.known_sequence(session, sequence_id):
            raise UnknownSequence(f"no sequence {sequence_id}")
        found = counts.read(session, sequence_id)
    lines = {(line.step, line.variant): line for line in _lines(definition)}
    for key, step in found.steps.items():
        line = _line(lines, key, None)
        line.scheduled, line.unknown = step.waiting, step.unknown
        for name in ("sent", "delivered", "opened", "clicked", "replied", "unsubscribed"):
            setattr(line, name, getattr(step, name))
        line.failed = sum(step.failed.values())
        line.skipped = {reason: n for reason, n in step.skipped.items() if n}
        line.converted = step.converted if goal else 0
    ended = found.completed + found.exited
    return {
        "sequence": sequence_id,
        "name": definition.model.name if definition else None,
        "goal": None if goal is None else {"event": goal.event, "within": str(goal.within)},
        "enrollments": {
            "total": found.entered,
            "active": found.entered - ended,
            "completed": found.completed,
            "exited": found.exited,
            "converted": found.converted if goal else 0,
        },
        "steps": [asdict(line) for line in lines.values()],
    }


def counted(
    runtime: Runtime,
    sequence_id: str,
    *,
    version: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> dict[str, Any]:
    """The counts over [start, end) (issue 14's funnels): per step and variant what happened
    in the range, and what waits now; UnknownSequence for a sequence nobody knows, BadRange
    for a range that ends before it starts."""
    counts.check_range(start, end)
    if runtime.catalog.sequence(sequence_id) is None and not models.SEQUENCE_ID.match(sequence_id):
        raise UnknownSequence(f"no sequence {sequence_id[:100]!r}")
    with transaction(runtime.database) as session:
        if runtime.catalog.sequence(sequence_id) is None and not store.known_sequence(
            session, sequence_id
        ):
            raise UnknownSequence(f"no sequence {sequence_id}")
        found = counts.read(session, sequence_id, version=version, start=start, end=end)
    return {
        "sequence": sequence_id,
        "version": version,
        "from": found.start.isoformat() if found.start else None,
        "to": found.end.isoformat() if found.end else None,
        "enrollments": {
            name: getattr(found, name) for name in ("entered", "completed", "exited", "converted")
        },
        "steps": [asdict(step) for step in found.steps.values()],
    }


def _line(lines: dict[StepKey, StepFunnel], key: StepKey, channel: str | None) -> StepFunnel:
    """The line for a step; steps the file no longer has (and one-off sends) come after."""
    if key not in lines:
        lines[key] = StepFunnel(key[0], key[1], channel)
    return lines[key]
