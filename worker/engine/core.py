"""The engine: one pure decision-maker for enrollments, driven by the worker, the API and
`nurture simulate` alike. State and a clock go in; the state is updated and what happened comes
back as timeline entries and emitted events. No database, no broker, no network, no wall clock.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import datetime

from worker.definitions.catalog import SequenceDef
from worker.engine import checks, enrolling, lifecycle, migration, pauses, reactions, scoring
from worker.engine.checks import Decision, Finish, Go, Switches, Wait
from worker.engine.context import Context
from worker.engine.expressions import safe_true
from worker.engine.migration import Migration
from worker.engine.runs import SCORING, content, owner
from worker.engine.schedule import place, step_channel
from worker.engine.segments import score, segment_changed
from worker.engine.state import Enrollment, Event, Lead, LeadWorld, Outcome, StepRun, StepStatus

SENT_EVENT = {"email": "email_sent", "sms": "sms_sent", "whatsapp": "whatsapp_sent"}


def counter() -> Callable[[], str]:
    """Enrollment ids `e1`, `e2` …: for a simulation, where one engine sees everything."""
    numbers = itertools.count(1)
    return lambda: f"e{next(numbers)}"


class Engine(Context):
    """Every decision about a lead; the lookups (names, zones, placement) come from `Context`."""

    # -- events -------------------------------------------------------------------------------

    def apply_event(self, world: LeadWorld, event: Event, now: datetime) -> Outcome:
        """Scoring, then exit_on, then `on:` reactions, then new enrollments (SPEC §2)."""
        outcome = Outcome()
        lead = world.lead
        self.expire_pauses(world, now, outcome)
        if event.type not in lead.history:
            lead.history.append(event.type)
        reacting = sorted(world.active(), key=lambda e: (e.sequence_id, e.enrolled_at))
        for enrollment in reacting:
            enrollment.events_seen.append(event.type)
        reactions.track_activity(lead, event)
        reactions.apply_lead_semantics(lead, event)
        segment_enrolls = score(self, world, event, now, outcome)
        for enrollment in reacting:
            definition = self.catalog.sequence(enrollment.sequence_id)
            if (
                definition
                and enrollment.active
                and event.type in definition.model.exit_on
                and reactions.reaches(self, world, enrollment, definition, event, now)
            ):
                lifecycle.exit_enrollment(enrollment, event.type, now, outcome)
        for enrollment in reacting:
            definition = self.catalog.sequence(enrollment.sequence_id)
            if definition is None or not enrollment.active:
                continue
            on_event = definition.model.on.get(event.type)
            if on_event and reactions.reaches(self, world, enrollment, definition, event, now):
                reactions.react(self, world, enrollment, definition, on_event, event, now, outcome)
        for sequence_id in sorted(self.catalog.sequences):
            definition = self.catalog.sequences[sequence_id]
            enroll = definition.model.enroll
            if enroll is not None and event.type in enroll.on:
                self.enroll(world, definition, event, now, outcome=outcome)
        for target in segment_enrolls:
            enrolling.enroll_by_name(self, world, target, event, now, outcome)
        return outcome

    def settle(
        self, world: LeadWorld, outcome: Outcome, now: datetime, limit: int = 100
    ) -> list[Event]:
        """Apply the events an outcome emitted, and theirs in turn, into the same outcome.

        Returns the events applied (the shell stores them). `limit` stops a loop that
        scoring files could make (enroll → event → enroll …)."""
        applied: list[Event] = []
        queue = list(outcome.emitted)
        outcome.emitted.clear()
        while queue and len(applied) < limit:
            event = queue.pop(0)
            applied.append(event)
            follow = self.apply_event(world, event, now)
            outcome.entries.extend(follow.entries)
            queue.extend(follow.emitted)
        return applied

    def enroll(
        self,
        world: LeadWorld,
        definition: SequenceDef,
        event: Event | None,
        now: datetime,
        *,
        outcome: Outcome | None = None,
        manual: bool = False,
    ) -> Enrollment | None:
        """Enroll the lead if the sequence's condition, key and re-enroll rule allow it."""
        return enrolling.enroll(self, world, definition, event, now, outcome=outcome, manual=manual)

    # -- send time ----------------------------------------------------------------------------

    def check(self, world: LeadWorld, run: StepRun, now: datetime, switches: Switches) -> Decision:
        """Send-time checks 1–5 (and WhatsApp's session rule) for a due run."""
        enrollment = owner(world, run)
        definition, step = self.definition_of(world, run)
        sequence_id = enrollment.sequence_id if enrollment else None
        found = checks.held(
            world.lead, enrollment, sequence_id, now, switches, decided=run.kind == "action"
        )
        if found is not None:
            return found
        if enrollment is not None and definition is None:
            return Wait(None, "sequence_missing")
        if step is None:
            return Finish(StepStatus.SKIPPED, "removed")
        channel = run.channel or step_channel(step, run.variant)
        sent = content(step, run)
        address = world.lead.address(channel)
        if channel == "notify":
            address = sent.email
        found = checks.reachable(world.lead, channel, address)
        if found is not None:
            return found
        names = self.names(world, enrollment, run.event, now)
        only_if, skip_if = getattr(step, "only_if", None), getattr(step, "skip_if", None)
        if only_if and not safe_true(only_if, names, on_error=False):
            return Finish(StepStatus.SKIPPED, "condition")
        if skip_if and safe_true(skip_if, names, on_error=True):
            return Finish(StepStatus.SKIPPED, "condition")
        found = checks.capped(world.lead, channel, self.catalog.policy.caps, now)
        if found is not None:
            return found
        allowed = place(now, self.placement(definition, world.lead, run, step))
        if allowed is None:
            return Finish(StepStatus.SKIPPED, "window")
        if allowed > now:
            return Wait(allowed, "window")
        if channel == "whatsapp":
            found = checks.whatsapp_session(world.lead, sent, now)
            if found is not None:
                return found
        return Go(channel, sent, address, run.variant)

    def wait(self, run: StepRun, decision: Wait) -> None:
        run.due_at = decision.until

    def record_sent(
        self, world: LeadWorld, run: StepRun, at: datetime, *, subject: str | None = None
    ) -> Outcome:
        """The provider accepted the message (or the CRM the task)."""
        outcome = Outcome()
        run.sent_at = at
        if run.channel in SENT_EVENT:
            world.lead.sends.append((at, run.channel))
        lifecycle.finish(self, world, run, StepStatus.SENT, None, at, outcome, subject=subject)
        if run.channel in SENT_EVENT:
            enrollment = owner(world, run)
            outcome.emitted.append(
                Event(
                    SENT_EVENT[run.channel],
                    at,
                    {
                        "sequence": enrollment.sequence_id if enrollment else SCORING,
                        "step": run.step_id,
                    },
                )
            )
        return outcome

    def record_finished(
        self,
        world: LeadWorld,
        run: StepRun,
        status: StepStatus,
        reason: str,
        at: datetime,
        *,
        suppress: str | None = None,
    ) -> Outcome:
        """The step ended without a send: a check, a render error, a provider's refusal."""
        outcome = Outcome()
        if suppress and run.channel:
            world.lead.suppressions[run.channel] = suppress
        lifecycle.finish(self, world, run, status, reason, at, outcome)
        return outcome

    # -- exit, pause, resume ------------------------------------------------------------------

    def exit(
        self, world: LeadWorld, sequence_id: str, now: datetime, reason: str = "manual"
    ) -> Outcome:
        outcome = Outcome()
        for enrollment in world.active():
            if enrollment.sequence_id == sequence_id:
                lifecycle.exit_enrollment(enrollment, reason, now, outcome)
        return outcome

    def pause(
        self,
        world: LeadWorld,
        now: datetime,
        *,
        sequence_id: str | None = None,
        until: datetime | None = None,
        reason: str | None = None,
        by: str | None = None,
    ) -> Outcome:
        """Support's pause: the whole lead (also holding enrollments made meanwhile) or one
        sequence."""
        return pauses.pause(
            self, world, now, sequence_id=sequence_id, until=until, reason=reason, by=by
        )

    def pause_enrollment(
        self,
        world: LeadWorld,
        enrollment: Enrollment,
        now: datetime,
        *,
        until: datetime | None,
        reason: str | None,
        by: str | None,
        outcome: Outcome,
    ) -> None:
        pauses.pause_enrollment(
            self, world, enrollment, now, until=until, reason=reason, by=by, outcome=outcome
        )

    def resume(self, world: LeadWorld, now: datetime, *, sequence_id: str | None = None) -> Outcome:
        """Remaining steps shift by the time spent paused, except those timed by `anchor:`."""
        return pauses.resume(self, world, now, sequence_id=sequence_id)

    def expire_pauses(self, world: LeadWorld, now: datetime, outcome: Outcome) -> None:
        """Pauses whose end has come are over (their steps already moved when they began)."""
        pauses.expire_pauses(world, now, outcome)

    # -- time passing -------------------------------------------------------------------------

    def tick(self, world: LeadWorld, now: datetime) -> Outcome:
        """What time alone does to a lead: pauses end, scores decay, quiet spells begin."""
        outcome = Outcome()
        self.expire_pauses(world, now, outcome)
        if self.catalog.scoring is not None:
            change = scoring.evaluate_segment(world.lead.score, self.rules, now)
            for target in segment_changed(self, world, change, None, now, outcome):
                enrolling.enroll_by_name(self, world, target, None, now, outcome)
        inactive_at = self.inactive_at(world.lead)
        if inactive_at is not None and now >= inactive_at:
            world.lead.inactive_notified = True
            outcome.emitted.append(Event("lead_inactive", inactive_at, {}))
        return outcome

    def inactive_at(self, lead: Lead) -> datetime | None:
        after = self.catalog.policy.inactive_after
        if after is None or lead.inactive_notified or lead.last_activity_at is None:
            return None
        return lead.last_activity_at + after.approximate()

    def next_wakeup(self, world: LeadWorld, now: datetime) -> datetime | None:
        """When `tick` next has something to do for this lead."""
        times = [self.inactive_at(world.lead)]
        if self.catalog.scoring is not None:
            times.append(scoring.next_segment_drop(world.lead.score, self.rules, now))
        held = [world.lead.pause, *(e.pause for e in world.active())]
        times.extend(p.until for p in held if p is not None)
        return min((t for t in times if t is not None), default=None)

    def due_runs(self, world: LeadWorld) -> Iterator[StepRun]:
        for enrollment in world.enrollments:
            yield from (r for r in enrollment.steps if r.status is StepStatus.PENDING)
        yield from (r for r in world.actions if r.status is StepStatus.PENDING)

    # -- sequence changes ---------------------------------------------------------------------

    def migrate(
        self, world: LeadWorld, enrollment: Enrollment, definition: SequenceDef, now: datetime
    ) -> tuple[Outcome, Migration]:
        """Follow a new version by step id: removed steps finish `removed`, retimed ones move,
        new ones already past are skipped; nothing already sent is touched."""
        return migration.migrate(self, world, enrollment, definition, now)
