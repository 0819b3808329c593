"""The console's lead page as data: who the lead is, consent and suppressions, score and segment,
every enrollment with its steps on one timeline (each time in the lead's zone and the
viewer's, each skipped or held step with its reason in words), messages with their copies,
events, and who acted on the lead. Built from support/view.py's reading of the lead; also what
a pause or an exit would hold or end (`pending_effect`), for the confirmation under a button.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from worker.accounts.audit import lead_actions
from worker.engine.checks import Switches
from worker.engine.state import Pause
from worker.kit.clock import utcnow, zone
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.messages import messages_with_copy
from worker.store.switches import read_switches
from worker.store.tables import ActionRow, StepRunRow
from worker.support import reasons
from worker.support.lead_lines import (
    ActionLine,
    ConsentLine,
    EnrollmentLine,
    EventLine,
    LeadPage,
    MessageLine,
    PendingStep,
    ScheduledLine,
    SequenceChoice,
    StepLine,
    When,
)
from worker.support.view import LeadData, read_lead

CHANNELS = ("email", "sms", "whatsapp")
RUNNING = ("queued", "claimed", "sending")
SOON = timedelta(days=6)


def lead_page(runtime: Runtime, lead_id: str, viewer_timezone: str) -> LeadPage:
    """The lead page's model; NotFound for an unknown lead."""
    with transaction(runtime.database) as session:
        data = read_lead(runtime, session, lead_id, utcnow())
        copies = messages_with_copy(session, data.row.id)
        actions = lead_actions(session, data.row.id)
        switches = read_switches(session)
    return _page(runtime, data, _Held(copies, actions, switches), viewer_timezone)


def pending_effect(runtime: Runtime, lead_id: str, sequence: str | None) -> list[PendingStep]:
    """The steps a pause would hold or an exit would end now: those still to come in the lead's
    active enrollments (of `sequence`, or every one), in due order."""
    with transaction(runtime.database) as session:
        data = read_lead(runtime, session, lead_id, utcnow())
    return _pending(data, sequence)


def _pending(data: LeadData, sequence: str | None) -> list[PendingStep]:
    active = {e.id for e in data.world.active() if sequence in (None, e.sequence_id)}
    found = [
        PendingStep(r.sequence_id, r.step_id, r.channel, r.due_at)
        for r in data.runs
        if r.enrollment_id in active and r.status == "pending"
    ]
    latest = datetime.max.replace(tzinfo=UTC)
    return sorted(found, key=lambda p: (p.due_at or latest, p.sequence))


class _Held:
    """What the page shows beside the lead's own rows: which messages keep a copy, who acted,
    and the operator switches (a step held by one says so)."""

    def __init__(self, copies: set[str], actions: list[ActionRow], switches: Switches) -> None:
        self.copies, self.actions, self.switches = copies, actions, switches


class _Clock:
    """Writes instants in the lead's zone and the viewer's."""

    def __init__(self, lead_zone: ZoneInfo, viewer_zone: ZoneInfo, now: datetime) -> None:
        self.lead_zone, self.viewer_zone, self.now = lead_zone, viewer_zone, now

    def when(self, at: datetime | None) -> When | None:
        if at is None:
            return None
        local = at.astimezone(self.lead_zone)
        near = abs(at - self.now) < SOON
        short = local.strftime("%a %H:%M" if near else "%a %d %b %H:%M")
        return When(at, _stamp(local), _stamp(at.astimezone(self.viewer_zone)), short)

    def at(self, at: datetime) -> When:
        found = self.when(at)
        assert found is not None
        return found


def _stamp(at: datetime) -> str:
    return at.strftime("%a %d %b %Y %H:%M %Z")


def _page(runtime: Runtime, data: LeadData, held: _Held, viewer_timezone: str) -> LeadPage:
    row, world = data.row, data.world
    lead_zone = runtime.engine.recipient_tz(world.lead)
    viewer_zone = zone(viewer_timezone) or ZoneInfo("UTC")
    clock = _Clock(lead_zone, viewer_zone, data.now)
    enrollments = _Steps(runtime, data, clock, held).enrollments()
    steps = {r.id: f"{r.sequence_id} / {r.step_id}" for r in data.runs}
    timeline = sorted(
        (step for e in enrollments for step in e.steps),
        key=lambda s: (s.when.utc if s.when else datetime.max.replace(tzinfo=UTC), s.step),
    )
    name = " ".join(part for part in (row.first_name, row.last_name) if part) or None
    return LeadPage(
        id=row.id,
        email=row.email,
        phone=row.phone,
        external_id=row.external_id,
        name=name,
        erased=row.erased,
        lead_timezone=lead_zone.key,
        viewer_timezone=viewer_zone.key,
        attributes=dict(row.attributes),
        consent=_consent(row.consent, row.suppressions, clock),
        suppressions=[(c, reasons.suppression_words(r)) for c, r in row.suppressions.items()],
        score=data.score,
        score_explanation=[
            (c.event_type, clock.at(c.at), c.points, c.current) for c in data.explanation
        ],
        segment=world.lead.score.segment,
        paused=_pause_words(world.lead.pause, clock, data.now),
        enrollments=enrollments,
        timeline=timeline,
        messages=[
            MessageLine(
                id=m.id,
                step=steps.get(m.step_run_id),
                channel=m.channel,
                to=m.to,
                subject=m.subject,
                status=reasons.delivery_words(m.status),
                sent=clock.at(m.sent_at),
                has_copy=m.id in held.copies,
                segments=m.segments,
            )
            for m in data.messages
        ],
        events=[
            EventLine(e.id, e.type, clock.at(e.occurred_at), e.source, dict(e.properties))
            for e in data.events
        ],
        actions=[
            ActionLine(clock.at(a.at), a.actor, a.action, a.target, a.reason, a.details)
            for a in held.actions
        ],
        scheduled=[
            ScheduledLine(p.sequence, p.step, p.channel, clock.when(p.due_at))
            for p in _pending(data, None)
        ],
        sequences=enrollable(runtime),
    )


def _consent(
    consent: dict[str, Any], suppressions: dict[str, str], clock: _Clock
) -> list[ConsentLine]:
    lines = []
    for channel in CHANNELS:
        given = consent.get(channel) or {}
        at = given.get("at")
        suppressed = suppressions.get(channel)
        lines.append(
            ConsentLine(
                channel=channel,
                granted=given.get("granted") if given else None,
                at=clock.when(datetime.fromisoformat(at)) if isinstance(at, str) else None,
                source=given.get("source"),
                suppressed=reasons.suppression_words(suppressed) if suppressed else None,
            )
        )
    return lines


class _Steps:
    """Each step run of the lead in words: its state, its time, and why."""

    def __init__(self, runtime: Runtime, data: LeadData, clock: _Clock, held: _Held) -> None:
        self.runtime, self.data, self.clock, self.held = runtime, data, clock, held
        self.messages = {m.step_run_id: m.id for m in data.messages}

    def enrollments(self) -> list[EnrollmentLine]:
        runs: dict[str, list[StepRunRow]] = {}
        for run in self.data.runs:
            runs.setdefault(run.enrollment_id or "", []).append(run)
        enrollments = self.data.world.enrollments
        lines = []
        for e in sorted(enrollments, key=lambda e: (e.enrolled_at, e.id), reverse=True):
            definition = self.runtime.catalog.sequence(e.sequence_id)
            paused = _pause_words(e.pause, self.clock, self.data.now) if e.active else None
            lines.append(
                EnrollmentLine(
                    id=e.id,
                    sequence=e.sequence_id,
                    name=definition.model.name if definition else e.sequence_id,
                    key=e.key,
                    status=e.status,
                    paused=paused,
                    enrolled=self.clock.at(e.enrolled_at),
                    ended=self.clock.when(e.ended_at),
                    ended_how=reasons.exit_words(e.exit_reason, e.status),
                    steps=[self.line(run, paused) for run in runs.get(e.id, [])],
                )
            )
        return lines

    def line(self, run: StepRunRow, paused: str | None) -> StepLine:
        state, at, reason = self.state(run, paused)
        return StepLine(
            sequence=run.sequence_id,
            enrollment_id=run.enrollment_id or "",
            step=run.step_id,
            channel=run.channel,
            status=run.status,
            state=state,
            when=self.clock.when(at),
            reason=reason,
            code=run.reason,
            variant=run.variant,
            message_id=self.messages.get(run.id),
        )

    def state(self, run: StepRunRow, paused: str | None) -> tuple[str, datetime | None, str | None]:
        """What the step is in words, the time that goes with it, and why."""
        code = run.reason
        if run.status == "sent":
            return "sent", run.sent_at or run.finished_at, None
        if run.status == "skipped":
            return "skipped", run.finished_at, self.skipped(run) if code else "skipped"
        if run.status == "failed":
            return "failed", run.finished_at, reasons.failed(code or "unknown")
        if run.status == "unknown":
            return "in doubt", run.claimed_at, reasons.IN_DOUBT
        if run.status in RUNNING:
            return "being sent", run.due_at, None
        if paused is not None:
            return "held", run.due_at, f"held: {paused}"
        code = self.still_held(run.sequence_id, code)
        if code:
            goes_out = self.clock.at(run.due_at).short if run.due_at else None
            caps = self.runtime.catalog.policy.caps
            return "held", run.due_at, reasons.held(code, run.channel, caps, goes_out)
        if run.due_at is None:
            return "waiting", None, "waits for the step before it"
        return "scheduled", run.due_at, None

    def still_held(self, sequence: str, code: str | None) -> str | None:
        """The reason a waiting step gives, as things stand now: a pause or a switch turned
        off since it was last looked at holds it no more; a switch turned on holds it."""
        switches = self.held.switches
        if sequence in switches.paused_sequences:
            return "sequence_paused"
        if switches.sends_paused:
            return "sends_paused"
        if code in ("paused", "sequence_paused", "sends_paused"):
            return None
        return code

    def skipped(self, run: StepRunRow) -> str:
        channel = run.channel or ""
        return reasons.skipped(
            run.reason or "",
            run.channel,
            suppression=self.data.row.suppressions.get(channel),
            consent=self.data.world.lead.consent.get(channel),
            condition=self.condition(run),
        )

    def condition(self, run: StepRunRow) -> str | None:
        definition = self.runtime.catalog.sequence(run.sequence_id)
        if definition is None or run.reason != "condition":
            return None
        step = next((s for s in definition.model.steps if s.id == run.step_id), None)
        for name in ("only_if", "skip_if"):
            expression = getattr(step, name, None)
            if expression:
                return f"{name}: {expression}"
        return None


def _pause_words(pause: Pause | None, clock: _Clock, now: datetime) -> str | None:
    if pause is None or not pause.active(now):
        return None
    words = "paused"
    if pause.by:
        words += f" by {pause.by}"
    if pause.reason:
        words += f" ({pause.reason})"
    until = clock.when(pause.until)
    return words + (f" until {until.short}" if until else " until resumed")


def enrollable(runtime: Runtime) -> list[SequenceChoice]:
    """Every loaded sequence, with the key and anchor properties it needs to enroll by hand."""
    choices = []
    for sequence_id, definition in sorted(runtime.catalog.sequences.items()):
        rule = definition.model.enroll
        choices.append(
            SequenceChoice(
                id=sequence_id,
                name=definition.model.name,
                key=_property(rule.key) if rule is not None and rule.key else None,
                anchor=_property(definition.model.anchor) if definition.model.anchor else None,
            )
        )
    return choices


def _property(expression: str) -> str:
    """`event.properties.cart_token` → `cart_token`; another expression is shown whole."""
    prefix = "event.properties."
    text = expression.strip()
    return text.removeprefix(prefix) if text.startswith(prefix) else text
