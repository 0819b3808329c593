"""What stands behind a step run: the enrollment that owns it, the definition it came from, the
content it sends, and a free id for a new reaction run."""

from __future__ import annotations

import itertools
from typing import Any

from worker.definitions import models
from worker.definitions.catalog import Catalog, SequenceDef
from worker.engine.schedule import channel_content
from worker.engine.state import Enrollment, LeadWorld, StepRun

SCORING = "scoring"
"""The sequence named for runs that belong to the lead rather than an enrollment: the scoring
file's segment actions."""


def owner(world: LeadWorld, run: StepRun) -> Enrollment | None:
    return next((e for e in world.enrollments if any(r is run for r in e.steps)), None)


def unique(base: str, runs: list[StepRun]) -> str:
    taken = {run.step_id for run in runs}
    for n in itertools.count(1):
        candidate = f"{base}#{n}"
        if candidate not in taken:
            return candidate
    raise AssertionError  # pragma: no cover


def step_definition(definition: SequenceDef, run: StepRun) -> Any:
    if run.kind == "step":
        index = definition.step_index(run.step_id)
        return definition.model.steps[index] if index is not None else None
    if run.kind == "send":
        return definition.one_off(run.step_id)
    # on.<event>.<index>#n
    _, event_type, rest = run.step_id.split(".", 2)
    index = int(rest.split("#", 1)[0])
    reactions = definition.model.on.get(event_type, [])
    if index >= len(reactions):
        return None
    return reactions[index]


def segment_action(catalog: Catalog, step_id: str) -> Any:
    if catalog.scoring is None or not step_id.startswith("segment."):
        return None
    _, segment, rest = step_id.split(".", 2)
    index = int(rest.split("#", 1)[0])
    actions = catalog.scoring.on_segment.get(segment, [])
    return actions[index] if index < len(actions) else None


def content(step: Any, run: StepRun) -> Any:
    if isinstance(step, models.CrmTaskReaction):
        return step.crm_task
    if isinstance(step, models.NotifyReaction):
        return step.notify
    return channel_content(step, run.variant)
