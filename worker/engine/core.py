"""The engine: one pure decision-maker for enrollments, driven by the worker, the API and
`nurture simulate` alike. State and a clock go in; the state is updated and what happened comes
back as timeline entries and emitted events. No database, no broker, no network, no wall clock.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from worker.definitions import conditions, models
from worker.definitions.catalog import Catalog, SequenceDef
from worker.engine import checks, scoring, timing
from worker.engine.checks import Decision, Finish, Go, Switches, Wait
from worker.engine.schedule import (
    QUIET_CHANNELS,
    Placement,
    channel_content,
    choose_variant,
    nominal_time,
    place,
    step_channel,
    window_rule,
)
from worker.engine.state import (
    Enrollment,
    Entry,
    Event,
    Lead,
    LeadWorld,
    Outcome,
    Pause,
    StepRun,
    StepStatus,
)
from worker.kit.clock import zone
from worker.kit.ids import new_id as kit_new_id

SCORING = "scoring"
NOT_ACTIVITY = frozenset(
    {
        "email_sent",
        "sms_sent",
        "whatsapp_sent",
        "sms_delivered",
        "sms_failed",
        "email_bounced",
        "segment_changed",
        "lead_inactive",
    }
)
SENT_EVENT = {"email": "email_sent", "sms": "sms_sent", "whatsapp": "whatsapp_sent"}
ACTION_OF_CHANNEL = {"crm_task": "crm_task", "notify": "notify"}


def counter() -> Callable[[], str]:
    """Enrollment ids `e1`, `e2` …: for a simulation, where one engine sees everything."""
    numbers = itertools.count(1)
    return lambda: f"e{next(numbers)}"


@dataclass(frozen=True)
class Migration:
    """What a sequence change did to one enrollment in flight (for `nurture diff` too)."""

    retimed: int = 0
    skipped: int = 0
    removed: int = 0
    added: int = 0


class Engine:
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

    # -- names, zones, placement -------------------------------------------------------------

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
            return None, _segment_action(self.catalog, run.step_id)
        definition = self.catalog.sequence(owner.sequence_id)
        if definition is None:
            return None, None
        return definition, _step_definition(definition, run)

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
        self._track_activity(lead, event)
        self._apply_lead_semantics(lead, event)
        segment_enrolls = self._score(world, event, now, outcome)
        for enrollment in reacting:
            definition = self.catalog.sequence(enrollment.sequence_id)
            if (
                definition
                and enrollment.active
                and event.type in definition.model.exit_on
                and self._reaches(world, enrollment, definition, event, now)
            ):
                self._exit(world, enrollment, event.type, now, outcome)
        for enrollment in reacting:
            definition = self.catalog.sequence(enrollment.sequence_id)
            if definition is None or not enrollment.active:
                continue
            reactions = definition.model.on.get(event.type)
            if reactions and self._reaches(world, enrollment, definition, event, now):
                self._react(world, enrollment, definition, reactions, event, now, outcome)
        for sequence_id in sorted(self.catalog.sequences):
            definition = self.catalog.sequences[sequence_id]
            enroll = definition.model.enroll
            if enroll is not None and event.type in enroll.on:
                self.enroll(world, definition, event, now, outcome=outcome)
        for target in segment_enrolls:
            self._enroll_by_name(world, target, event, now, outcome)
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

    def _track_activity(self, lead: Lead, event: Event) -> None:
        if event.type in NOT_ACTIVITY:
            return
        if lead.last_activity_at is None or event.occurred_at >= lead.last_activity_at:
            lead.last_activity_at = event.occurred_at
            lead.inactive_notified = False

    def _apply_lead_semantics(self, lead: Lead, event: Event) -> None:
        """Events that change whether the lead may be contacted, wherever they come from."""
        channel = str(event.properties.get("channel") or "email")
        if event.type == "unsubscribed":
            lead.suppressions[channel] = str(event.properties.get("reason") or "unsubscribed")
        elif event.type == "resubscribed":
            lead.suppressions.pop(channel, None)
        elif event.type == "email_bounced" and event.properties.get("permanent", True):
            lead.suppressions["email"] = "bounced"
        elif event.type == "sms_failed" and event.properties.get("suppress"):
            # a provider's permanent refusal reported after the send (STOP, no such number)
            texted = str(event.properties.get("channel") or "sms")
            lead.suppressions[texted] = str(event.properties["suppress"])

    def _reaches(
        self,
        world: LeadWorld,
        enrollment: Enrollment,
        definition: SequenceDef,
        event: Event,
        now: datetime,
    ) -> bool:
        """A keyed enrollment hears an event whose key is its own, or that has no key at all."""
        enroll = definition.model.enroll
        if enrollment.key is None or enroll is None or enroll.key is None:
            return True
        key = _safe_eval(enroll.key, self.names(world, None, event, now))
        return key in (None, "") or str(key) == enrollment.key

    # -- scoring ------------------------------------------------------------------------------

    def _score(self, world: LeadWorld, event: Event, now: datetime, outcome: Outcome) -> list[str]:
        if self.catalog.scoring is None:
            return []
        change = scoring.add_points(
            world.lead.score, self.rules, event.type, event.occurred_at, event.id
        )
        if change is None:
            change = scoring.evaluate_segment(world.lead.score, self.rules, now)
        return self._segment_changed(world, change, event, now, outcome)

    def _segment_changed(
        self,
        world: LeadWorld,
        change: scoring.SegmentChange | None,
        event: Event | None,
        at: datetime,
        outcome: Outcome,
    ) -> list[str]:
        """Emit segment_changed; on entry from below, run the segment's actions once."""
        if change is None or self.catalog.scoring is None:
            return []
        outcome.emitted.append(
            Event(
                "segment_changed",
                at,
                {"from": change.from_segment, "to": change.to_segment},
            )
        )
        if not change.upward or change.to_segment is None:
            return []
        enrolls: list[str] = []
        actions = self.catalog.scoring.on_segment.get(change.to_segment, [])
        for index, action in enumerate(actions):
            if isinstance(action, models.EnrollReaction):
                enrolls.append(action.enroll)
                continue
            channel = "crm_task" if isinstance(action, models.CrmTaskReaction) else "notify"
            base = f"segment.{change.to_segment}.{index}"
            run = StepRun(
                step_id=_unique(base, world.actions),
                kind="action",
                channel=channel,
                due_at=at,
                nominal_at=at,
                event=event,
            )
            world.actions.append(run)
        return enrolls

    # -- enrollment ---------------------------------------------------------------------------

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
        outcome = outcome if outcome is not None else Outcome()
        model = definition.model
        names = self.names(world, None, event, now)
        enroll = model.enroll
        key: str | None = None
        if enroll is not None and not manual and enroll.if_ and not _safe_true(enroll.if_, names):
            return None
        if enroll is not None and enroll.key is not None:
            value = _safe_eval(enroll.key, names)
            if value in (None, ""):
                return None
            key = str(value)
        previous = [e for e in world.enrollments if e.sequence_id == definition.id and e.key == key]
        active = [e for e in previous if e.active]
        rule = enroll.reenroll if enroll is not None else "never"
        if active:
            if rule != "always" or manual:
                return None
            for enrollment in active:
                self._exit(world, enrollment, "reenrolled", now, outcome)
        elif previous and rule == "never" and not manual:
            return None
        return self._start(world, definition, event, key, now, outcome)

    def _enroll_by_name(
        self,
        world: LeadWorld,
        sequence_id: str,
        event: Event | None,
        now: datetime,
        outcome: Outcome,
    ) -> None:
        definition = self.catalog.sequence(sequence_id)
        if definition is not None:
            self.enroll(world, definition, event, now, outcome=outcome)

    def _start(
        self,
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
            found = _as_datetime(_safe_eval(model.anchor, self.names(world, None, event, now)))
            if found is None:
                outcome.entries.append(Entry(now, definition.id, None, "skip", reason="anchor"))
                return None
            anchor_at = found
        enrollment = Enrollment(
            id=self.new_id(),
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
        tz = self.schedule_tz(definition, world.lead)
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
                self._schedule(world, enrollment, definition, run, step, nominal, now, outcome)
        lead_pause = world.lead.pause
        if lead_pause is not None and lead_pause.active(now):
            self._pause_enrollment(
                world, enrollment, now, lead_pause.until, lead_pause.reason, lead_pause.by, "lead"
            )
        self._complete_if_done(world, enrollment, now, outcome)
        return enrollment

    def _schedule(
        self,
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
            self._finish(world, run, StepStatus.SKIPPED, "past", now, outcome)
            return
        due = place(nominal, self.placement(definition, world.lead, run, step))
        negative = getattr(step, "at", None) is not None and step.at.negative
        if due is None or (negative and due > enrollment.anchor_at):
            self._finish(world, run, StepStatus.SKIPPED, "window", now, outcome)
            return
        run.due_at = due

    # -- reactions ----------------------------------------------------------------------------

    def _react(
        self,
        world: LeadWorld,
        enrollment: Enrollment,
        definition: SequenceDef,
        reactions: list[Any],
        event: Event,
        now: datetime,
        outcome: Outcome,
    ) -> None:
        for index, reaction in enumerate(reactions):
            if not enrollment.active:
                return
            if isinstance(reaction, models.SendReaction):
                self._one_off(world, enrollment, definition, reaction.send, event, now, outcome)
            elif isinstance(reaction, models.SkipReaction):
                for step_id in reaction.skip:
                    run = enrollment.step(step_id)
                    if run is not None and run.status is StepStatus.PENDING:
                        self._finish(world, run, StepStatus.SKIPPED, "reaction", now, outcome)
            elif isinstance(reaction, models.ExitReaction):
                self._exit(world, enrollment, event.type, now, outcome)
            elif isinstance(reaction, models.PauseReaction):
                until = None
                if reaction.pause.for_ is not None:
                    until = timing.add_duration(
                        now, reaction.pause.for_, self.schedule_tz(definition, world.lead)
                    )
                self.pause_enrollment(
                    world,
                    enrollment,
                    now,
                    until=until,
                    reason=reaction.pause.reason or event.type,
                    by="reaction",
                    outcome=outcome,
                )
            elif isinstance(reaction, models.EnrollReaction):
                self._enroll_by_name(world, reaction.enroll, event, now, outcome)
            else:
                channel = "crm_task" if isinstance(reaction, models.CrmTaskReaction) else "notify"
                run = StepRun(
                    step_id=_unique(f"on.{event.type}.{index}", enrollment.steps),
                    kind="action",
                    channel=channel,
                    due_at=now,
                    nominal_at=now,
                    version=definition.version,
                    event=event,
                )
                enrollment.steps.append(run)

    def _one_off(
        self,
        world: LeadWorld,
        enrollment: Enrollment,
        definition: SequenceDef,
        send: models.OneOffSend,
        event: Event,
        now: datetime,
        outcome: Outcome,
    ) -> None:
        if enrollment.step(send.id) is not None:
            return  # once per enrollment
        run = StepRun(
            step_id=send.id,
            kind="send",
            channel=step_channel(send, None),
            version=definition.version,
            event=event,
        )
        enrollment.steps.append(run)
        tz = self.schedule_tz(definition, world.lead)
        nominal = timing.add_duration(event.occurred_at, send.delay, tz)
        self._schedule(
            world,
            enrollment,
            definition,
            run,
            send,
            nominal,
            now,
            outcome,
            past_before=event.occurred_at,
        )

    # -- send time ----------------------------------------------------------------------------

    def check(self, world: LeadWorld, run: StepRun, now: datetime, switches: Switches) -> Decision:
        """Send-time checks 1–5 (and WhatsApp's session rule) for a due run."""
        enrollment = _owner(world, run)
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
        content = _content(step, run)
        address = world.lead.address(channel)
        if channel == "notify":
            address = content.email
        found = checks.reachable(world.lead, channel, address)
        if found is not None:
            return found
        names = self.names(world, enrollment, run.event, now)
        only_if, skip_if = getattr(step, "only_if", None), getattr(step, "skip_if", None)
        if only_if and not _safe_true(only_if, names, on_error=False):
            return Finish(StepStatus.SKIPPED, "condition")
        if skip_if and _safe_true(skip_if, names, on_error=True):
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
            found = checks.whatsapp_session(world.lead, content, now)
            if found is not None:
                return found
        return Go(channel, content, address, run.variant)

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
        self._finish(world, run, StepStatus.SENT, None, at, outcome, subject=subject)
        if run.channel in SENT_EVENT:
            enrollment = _owner(world, run)
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
        self._finish(world, run, status, reason, at, outcome)
        return outcome

    def _finish(
        self,
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
        enrollment = _owner(world, run)
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
        self._release_next(world, enrollment, run, at, outcome)
        self._complete_if_done(world, enrollment, at, outcome)

    def _release_next(
        self,
        world: LeadWorld,
        enrollment: Enrollment,
        run: StepRun,
        at: datetime,
        outcome: Outcome,
    ) -> None:
        """An `after:` step counts from when the previous step in file order finished."""
        definition = self.catalog.sequence(enrollment.sequence_id)
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
        nominal = timing.add_duration(at, step.after, self.schedule_tz(definition, world.lead))
        self._schedule(
            world, enrollment, definition, following, step, nominal, at, outcome, past_before=at
        )

    def _complete_if_done(
        self, world: LeadWorld, enrollment: Enrollment, at: datetime, outcome: Outcome
    ) -> None:
        if enrollment.active and all(run.finished for run in enrollment.steps):
            enrollment.status = "completed"
            enrollment.ended_at = at
            outcome.entries.append(
                Entry(at, enrollment.sequence_id, None, "complete", enrollment=enrollment.id)
            )

    # -- exit, pause, resume ------------------------------------------------------------------

    def exit(
        self, world: LeadWorld, sequence_id: str, now: datetime, reason: str = "manual"
    ) -> Outcome:
        outcome = Outcome()
        for enrollment in world.active():
            if enrollment.sequence_id == sequence_id:
                self._exit(world, enrollment, reason, now, outcome)
        return outcome

    def _exit(
        self,
        world: LeadWorld,
        enrollment: Enrollment,
        reason: str,
        now: datetime,
        outcome: Outcome,
    ) -> None:
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
            Entry(
                now, enrollment.sequence_id, None, "exit", reason=reason, enrollment=enrollment.id
            )
        )
        outcome.exited.append(enrollment.sequence_id)

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
        outcome = Outcome()
        self.expire_pauses(world, now, outcome)
        if sequence_id is None:
            world.lead.pause = Pause(now, until, reason, by, "lead")
            outcome.entries.append(Entry(now, None, None, "pause", reason=reason))
            for enrollment in world.active():
                if enrollment.pause is None:
                    self._pause_enrollment(world, enrollment, now, until, reason, by, "lead")
            return outcome
        for enrollment in world.active():
            if enrollment.sequence_id == sequence_id and enrollment.pause is None:
                self.pause_enrollment(
                    world, enrollment, now, until=until, reason=reason, by=by, outcome=outcome
                )
        return outcome

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
        if enrollment.pause is not None:
            return
        self._pause_enrollment(world, enrollment, now, until, reason, by, "enrollment")
        outcome.entries.append(
            Entry(
                now, enrollment.sequence_id, None, "pause", reason=reason, enrollment=enrollment.id
            )
        )

    def _pause_enrollment(
        self,
        world: LeadWorld,
        enrollment: Enrollment,
        now: datetime,
        until: datetime | None,
        reason: str | None,
        by: str | None,
        scope: Any,
    ) -> None:
        """A pause with an end moves the steps at once, so nothing needs to wake up to resume."""
        shifted = (until - now) if until is not None and until > now else timedelta(0)
        enrollment.pause = Pause(now, until, reason, by, scope, shifted)
        if shifted:
            self._shift(world, enrollment, shifted, now)

    def resume(self, world: LeadWorld, now: datetime, *, sequence_id: str | None = None) -> Outcome:
        """Remaining steps shift by the time spent paused, except those timed by `anchor:`."""
        outcome = Outcome()
        if sequence_id is None and world.lead.pause is not None:
            world.lead.pause = None
            outcome.entries.append(Entry(now, None, None, "resume"))
        for enrollment in world.active():
            if enrollment.pause is None:
                continue
            if sequence_id is None or enrollment.sequence_id == sequence_id:
                self._resume_enrollment(world, enrollment, now, outcome)
        return outcome

    def _resume_enrollment(
        self, world: LeadWorld, enrollment: Enrollment, now: datetime, outcome: Outcome
    ) -> None:
        pause = enrollment.pause
        assert pause is not None
        enrollment.pause = None
        self._shift(world, enrollment, (now - pause.at) - pause.shifted, now)
        outcome.entries.append(
            Entry(now, enrollment.sequence_id, None, "resume", enrollment=enrollment.id)
        )

    def expire_pauses(self, world: LeadWorld, now: datetime, outcome: Outcome) -> None:
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
        self, world: LeadWorld, enrollment: Enrollment, delta: timedelta, now: datetime
    ) -> None:
        definition = self.catalog.sequence(enrollment.sequence_id)
        enrollment.shift += delta
        for run in enrollment.steps:
            if run.status is not StepStatus.PENDING or run.nominal_at is None:
                continue
            if not run.anchored:
                run.nominal_at += delta
            step = _step_definition(definition, run) if definition else None
            run.due_at = place(run.nominal_at, self.placement(definition, world.lead, run, step))

    # -- time passing -------------------------------------------------------------------------

    def tick(self, world: LeadWorld, now: datetime) -> Outcome:
        """What time alone does to a lead: pauses end, scores decay, quiet spells begin."""
        outcome = Outcome()
        self.expire_pauses(world, now, outcome)
        if self.catalog.scoring is not None:
            change = scoring.evaluate_segment(world.lead.score, self.rules, now)
            for target in self._segment_changed(world, change, None, now, outcome):
                self._enroll_by_name(world, target, None, now, outcome)
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
        pauses = [world.lead.pause, *(e.pause for e in world.active())]
        times.extend(p.until for p in pauses if p is not None)
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
        outcome = Outcome()
        retimed = skipped = removed = added = 0
        tz = self.schedule_tz(definition, world.lead)
        old_runs = {run.step_id: run for run in enrollment.steps}
        new_ids = {step.id for step in definition.model.steps}
        for old in enrollment.steps:
            gone = (old.kind == "step" and old.step_id not in new_ids) or (
                old.kind == "send" and definition.one_off(old.step_id) is None
            )
            if gone and old.status is StepStatus.PENDING:
                self._finish(world, old, StepStatus.SKIPPED, "removed", now, outcome)
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
                    self._finish(world, run, StepStatus.SKIPPED, "past", now, outcome)
                    skipped += 1
                else:
                    before = run.nominal_at
                    self._schedule(
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
        self._complete_if_done(world, enrollment, now, outcome)
        return outcome, Migration(retimed, skipped, removed, added)


def _owner(world: LeadWorld, run: StepRun) -> Enrollment | None:
    return next((e for e in world.enrollments if any(r is run for r in e.steps)), None)


def _unique(base: str, runs: list[StepRun]) -> str:
    taken = {run.step_id for run in runs}
    for n in itertools.count(1):
        candidate = f"{base}#{n}"
        if candidate not in taken:
            return candidate
    raise AssertionError  # pragma: no cover


def _step_definition(definition: SequenceDef, run: StepRun) -> Any:
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


def _segment_action(catalog: Catalog, step_id: str) -> Any:
    if catalog.scoring is None or not step_id.startswith("segment."):
        return None
    _, segment, rest = step_id.split(".", 2)
    index = int(rest.split("#", 1)[0])
    actions = catalog.scoring.on_segment.get(segment, [])
    return actions[index] if index < len(actions) else None


def _content(step: Any, run: StepRun) -> Any:
    if isinstance(step, models.CrmTaskReaction):
        return step.crm_task
    if isinstance(step, models.NotifyReaction):
        return step.notify
    return channel_content(step, run.variant)


def _safe_eval(expression: str, names: dict[str, Any]) -> Any:
    try:
        return conditions.evaluate(expression, names)
    except conditions.ConditionError:
        return None


def _safe_true(expression: str, names: dict[str, Any], *, on_error: bool = False) -> bool:
    """A condition that fails to evaluate counts as `on_error`: the side that sends nothing."""
    try:
        return conditions.is_true(expression, names)
    except conditions.ConditionError:
        return on_error


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        found = value
    elif isinstance(value, str):
        try:
            found = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    if found.tzinfo is None:
        return None
    return timing.to_utc(found)
