"""`nurture simulate`: the production engine on a virtual clock, for one lead.

Events apply in `occurred_at` order (before a step due at the same instant); due steps go
through the same send-time checks as in the worker, and every provider accepts.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from worker.definitions import models
from worker.definitions.catalog import Catalog
from worker.definitions.durations import parse_duration
from worker.engine import timing
from worker.engine.checks import Finish, Go, Switches, Wait
from worker.engine.core import Engine, counter
from worker.engine.migration import Migration
from worker.engine.state import Entry, Event, Lead, LeadWorld, Outcome, StepRun, StepStatus
from worker.ingest.schemas import EventTypeName, LeadIn
from worker.kit.errors import InvalidInput
from worker.rendering.errors import RenderError
from worker.sending.compose import compose, context

SAMPLE_UNSUBSCRIBE = "https://example.com/u/simulated"
MAX_STEPS = 100_000


class SimulationError(InvalidInput):
    """Bad simulation input: names the file, line and field."""


class EventLine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    type: EventTypeName
    occurred_at: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


def parse_time(text: str, start: datetime) -> datetime:
    """An ISO time with an offset, or an offset from the start like `+2d3h`."""
    text = text.strip()
    if text.startswith("+") or text.startswith("-"):
        return timing.add_duration(start, parse_duration(text), UTC)  # type: ignore[arg-type]
    found = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if found.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone offset: add Z or +01:00")
    return found.astimezone(UTC)


def read_events(path: Path, start: datetime) -> list[Event]:
    """JSON lines; every bad line reported as file:line with the field."""
    events, problems = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            item = EventLine.model_validate_json(line)
            at = parse_time(item.occurred_at, start) if item.occurred_at else start
        except ValidationError as exc:
            for error in exc.errors():
                where = ".".join(str(p) for p in error["loc"]) or "line"
                problems.append(f"{path}:{number}: {where}: {error['msg']}")
            continue
        except ValueError as exc:
            problems.append(f"{path}:{number}: occurred_at: {exc}")
            continue
        events.append(Event(item.type, at, item.properties, item.id))
    if problems:
        raise SimulationError("\n".join(problems))
    return events


def read_lead(data: Any, where: str) -> Lead:
    try:
        lead_in = LeadIn.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field_name = ".".join(str(p) for p in error["loc"]) or "lead"
            lines.append(f"{where}: {field_name}: {error['msg']}")
        raise SimulationError("\n".join(lines)) from exc
    return lead_in.to_lead("lead-1")


def scoped_catalog(catalog: Catalog, sequences: Iterable[str]) -> Catalog:
    """Only the named sequences and those they (or the scoring file) can hand over to."""
    wanted = set(sequences)
    unknown = wanted - set(catalog.sequences)
    if unknown:
        known = ", ".join(sorted(catalog.sequences)) or "none"
        raise SimulationError(f"no sequence {', '.join(sorted(unknown))} (sequences: {known})")
    targets = _segment_targets(catalog)
    frontier = list(wanted | targets)
    while frontier:
        definition = catalog.sequences.get(frontier.pop())
        if definition is None:
            continue
        for reactions in definition.model.on.values():
            for reaction in reactions:
                if isinstance(reaction, models.EnrollReaction) and reaction.enroll not in wanted:
                    wanted.add(reaction.enroll)
                    frontier.append(reaction.enroll)
    kept = {k: v for k, v in catalog.sequences.items() if k in wanted or k in targets}
    return replace(catalog, sequences=kept)


def _segment_targets(catalog: Catalog) -> set[str]:
    if catalog.scoring is None:
        return set()
    return {
        action.enroll
        for actions in catalog.scoring.on_segment.values()
        for action in actions
        if isinstance(action, models.EnrollReaction)
    }


@dataclass
class Simulation:
    catalog: Catalog
    world: LeadWorld
    until: datetime
    engine: Engine = field(init=False)
    entries: list[Entry] = field(default_factory=list)
    switches: Switches = field(default_factory=Switches)

    def __post_init__(self) -> None:
        self.engine = Engine(self.catalog, new_id=counter())

    def redeploy(self, catalog: Catalog, at: datetime) -> dict[str, Migration]:
        """A new version of the files: enrollments in flight follow it by step id."""
        self.catalog = catalog
        self.engine = Engine(catalog, new_id=self.engine.new_id)
        report: dict[str, Migration] = {}
        for enrollment in self.world.active():
            definition = catalog.sequence(enrollment.sequence_id)
            if definition is None or definition.version == enrollment.version:
                continue
            outcome, migration = self.engine.migrate(self.world, enrollment, definition, at)
            self._absorb(outcome, at)
            report[enrollment.id] = migration
        return report

    def run(self, events: list[Event], start: datetime, enroll_into: list[str]) -> list[Entry]:
        order = itertools.count()
        queue = [(e.occurred_at, next(order), e) for e in events]
        heapq.heapify(queue)
        now = min([start, *(e.occurred_at for e in events)])
        enrolling = {e.type for e in events}
        pending_enroll = [s for s in enroll_into if not self._enrolled_by(s, enrolling)]
        for _ in range(MAX_STEPS):
            if pending_enroll and (not queue or start <= queue[0][0]):
                now = max(now, start)
                for sequence_id in pending_enroll:
                    self._enroll_at_start(sequence_id, now)
                pending_enroll = []
                continue
            due = self._next_due()
            wake = self.engine.next_wakeup(self.world, now)
            candidates = [t for t in (queue[0][0] if queue else None, due, wake) if t is not None]
            if not candidates:
                break
            at = max(now, min(candidates))
            if at > self.until:
                break
            now = at
            if queue and queue[0][0] <= now:
                self._apply(heapq.heappop(queue)[2], now)
            elif wake is not None and wake <= now:
                self._absorb(self.engine.tick(self.world, now), now)
            else:
                self._run_due(now)
        return sorted(self.entries, key=timeline_order)

    def _enrolled_by(self, sequence_id: str, types: set[str]) -> bool:
        enroll = self.catalog.sequences[sequence_id].model.enroll
        return enroll is not None and bool(types & set(enroll.on))

    def _enroll_at_start(self, sequence_id: str, now: datetime) -> None:
        definition = self.catalog.sequences[sequence_id]
        enroll = definition.model.enroll
        kind = enroll.on[0] if enroll and enroll.on else "enrolled"
        outcome = Outcome()
        found = self.engine.enroll(self.world, definition, Event(kind, now), now, outcome=outcome)
        if found is None and not outcome.entries:
            outcome.entries.append(Entry(now, sequence_id, None, "skip", reason="condition"))
        self._absorb(outcome, now)

    def _apply(self, event: Event, now: datetime) -> None:
        self._absorb(self.engine.apply_event(self.world, event, now), now)

    def _absorb(self, outcome: Outcome, now: datetime) -> None:
        self.engine.settle(self.world, outcome, now)
        self.entries.extend(outcome.entries)

    def _next_due(self) -> datetime | None:
        times = [r.due_at for r in self.engine.due_runs(self.world) if r.due_at is not None]
        return min(times, default=None)

    def _run_due(self, now: datetime) -> None:
        run = min(
            (r for r in self.engine.due_runs(self.world) if r.due_at and r.due_at <= now),
            key=lambda r: r.due_at or now,
        )
        decision = self.engine.check(self.world, run, now, self.switches)
        if isinstance(decision, Wait):
            until = decision.until
            self.engine.wait(
                run,
                Wait(max(until, now + timedelta(seconds=1)), decision.why)
                if until is not None
                else decision,
            )
            return
        if isinstance(decision, Finish):
            outcome = self.engine.record_finished(
                self.world, run, decision.status, decision.reason, now
            )
            self._absorb(outcome, now)
            return
        self._send(run, decision, now)

    def _send(self, run: StepRun, go: Go, now: datetime) -> None:
        enrollment = next((e for e in self.world.enrollments if run in e.steps), None)
        names = self.engine.names(self.world, enrollment, run.event, now)
        values = context(
            names,
            sequence=enrollment.sequence_id if enrollment else "scoring",
            step=run.step_id,
            unsubscribe_url=SAMPLE_UNSUBSCRIBE,
            now=now,
        )
        templates = self.catalog.templates
        subject = None
        if templates is not None:
            try:
                subject = compose(templates, go, values, derive_text=False).subject
            except RenderError as exc:
                reason = getattr(exc, "reason", "render_error")  # as the claim records it
                outcome = self.engine.record_finished(
                    self.world, run, StepStatus.FAILED, reason, now
                )
                self._absorb(outcome, now)
                return
        self._absorb(self.engine.record_sent(self.world, run, now, subject=subject), now)


def timeline_order(entry: Entry) -> tuple[datetime, str, str]:
    """By time, sequence, step (SPEC §6); lines without a step come first at their instant,
    except `complete`, which follows the step that completed the enrollment."""
    step = entry.step or ("\uffff" if entry.action == "complete" else "")
    return entry.at, entry.sequence or "", step


def simulate(
    catalog: Catalog,
    lead: Lead,
    *,
    events: list[Event],
    start: datetime,
    until: datetime,
    sequences: list[str] | None = None,
) -> list[Entry]:
    if sequences:
        catalog = scoped_catalog(catalog, sequences)
    simulation = Simulation(catalog, LeadWorld(lead), until)
    return simulation.run(events, start, sequences or [])


def entry_json(entry: Entry) -> str:
    """SPEC §6: every key present, in this order; times in UTC."""
    return json.dumps(
        {
            "at": entry.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "sequence": entry.sequence,
            "step": entry.step,
            "action": entry.action,
            "channel": entry.channel,
            "reason": entry.reason,
            "subject": entry.subject,
        },
        ensure_ascii=False,
    )
