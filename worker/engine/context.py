"""What every engine decision reads: the catalog, its scoring rules, the default zone and the id
maker, and the lookups built on them (names for conditions, zones, placement, a run's step)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from worker.definitions.catalog import Catalog, SequenceDef
from worker.engine import scoring, timing
from worker.engine.runs import segment_action, step_definition
from worker.engine.schedule import QUIET_CHANNELS, Placement, window_rule
from worker.engine.state import Enrollment, Event, Lead, LeadWorld, StepRun
from worker.kit.clock import zone
from worker.kit.ids import new_id as kit_new_id


class Context:
    """The read-only side of the engine; `Engine` builds on it and the engine's modules take it."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        default_timezone: str = "UTC",
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self.catalog = catalog
        self.default_timezone = catalog.policy.default_timezone or default_timezone
        self.new_id = new_id or kit_new_id
        rules = catalog.scoring
        self.rules = (
            scoring.ScoringRules(
                points=dict(rules.points),
                half_life=rules.decay.half_life.approximate() if rules.decay else None,
                segments=dict(rules.segments),
            )
            if rules
            else scoring.ScoringRules.empty()
        )

    def names(
        self, world: LeadWorld, enrollment: Enrollment | None, event: Event | None, now: datetime
    ) -> dict[str, Any]:
        """What conditions and templates see: lead, event, events, history, now."""
        event = event or (enrollment.event if enrollment else None)
        return {
            "lead": world.lead.names(scoring.score_at(world.lead.score, self.rules, now)),
            "event": event.names() if event else {"type": None, "properties": {}},
            "events": list(enrollment.events_seen) if enrollment else [],
            "history": list(world.lead.history),
            "now": now,
        }

    def recipient_tz(self, lead: Lead) -> ZoneInfo:
        return zone(lead.timezone) or ZoneInfo(self.default_timezone)

    def schedule_tz(self, definition: SequenceDef | None, lead: Lead) -> ZoneInfo:
        if definition is None or definition.model.timezone == "lead":
            return self.recipient_tz(lead)
        return ZoneInfo(definition.model.timezone)

    def placement(
        self, definition: SequenceDef | None, lead: Lead, run: StepRun, step: Any
    ) -> Placement:
        window = None
        if run.kind != "action" and definition is not None:
            window = window_rule(getattr(step, "window", None) or definition.model.window)
        quiet = None
        if run.channel in QUIET_CHANNELS:
            quiet = timing.parse_hours(getattr(self.catalog.policy.quiet_hours, run.channel))
        return Placement(self.schedule_tz(definition, lead), self.recipient_tz(lead), window, quiet)

    def definition_of(self, world: LeadWorld, run: StepRun) -> tuple[SequenceDef | None, Any]:
        """The sequence and the step, one-off or action definition behind a run."""
        owner = next((e for e in world.enrollments if run in e.steps), None)
        if owner is None:
            return None, segment_action(self.catalog, run.step_id)
        definition = self.catalog.sequence(owner.sequence_id)
        if definition is None:
            return None, None
        return definition, step_definition(definition, run)
