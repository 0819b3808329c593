"""What the engine knows about one lead: the lead, its enrollments and their step runs.

Plain dataclasses, so the database shell and the simulator can both load and keep them. The
engine mutates the state it is given and reports what it did as timeline entries and events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from worker.engine.scoring import ScoreState


class StepStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    SKIPPED = "skipped"
    FAILED = "failed"
    UNKNOWN = "unknown"


FINISHED = frozenset({StepStatus.SENT, StepStatus.SKIPPED, StepStatus.FAILED, StepStatus.UNKNOWN})

StepKind = Literal["step", "send", "action"]
"""`step`: from `steps:`; `send`: a one-off `send:` reaction; `action`: a crm_task or notify
reaction, or a scoring segment action (those live on the lead, not an enrollment)."""


@dataclass(frozen=True)
class Event:
    type: str
    occurred_at: datetime
    properties: dict[str, Any] = field(default_factory=dict)
    id: str | None = None

    def names(self) -> dict[str, Any]:
        """The event as conditions and templates see it."""
        return {
            "id": self.id,
            "type": self.type,
            "occurred_at": self.occurred_at,
            "properties": self.properties,
        }


@dataclass
class StepRun:
    step_id: str
    kind: StepKind = "step"
    status: StepStatus = StepStatus.PENDING
    due_at: datetime | None = None
    """When the step should next be looked at; None while it waits for the previous step or
    is held (a pause without an end, the incident switch)."""
    nominal_at: datetime | None = None
    """The timing rule's answer, moved by pauses, never by windows or caps."""
    anchored: bool = False
    """Timed against an explicit `anchor:`: a pause does not move it."""
    channel: str | None = None
    variant: int | None = None
    reason: str | None = None
    finished_at: datetime | None = None
    sent_at: datetime | None = None
    version: str | None = None
    attempts: int = 0
    event: Event | None = None
    """The event that fired a reaction; templates see it as `event`."""
    id: str | None = None
    """The database row's id; the engine never reads it."""

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass
class Pause:
    at: datetime
    until: datetime | None = None
    reason: str | None = None
    by: str | None = None
    scope: Literal["lead", "enrollment"] = "enrollment"
    shifted: timedelta = timedelta(0)
    """How far the steps were already moved when the pause began (a pause with an end)."""

    def active(self, now: datetime) -> bool:
        return self.until is None or now < self.until


@dataclass
class Enrollment:
    id: str
    sequence_id: str
    enrolled_at: datetime
    anchor_at: datetime
    version: str
    key: str | None = None
    status: Literal["active", "completed", "exited"] = "active"
    anchored: bool = False
    event: Event | None = None
    events_seen: list[str] = field(default_factory=list)
    steps: list[StepRun] = field(default_factory=list)
    pause: Pause | None = None
    shift: timedelta = timedelta(0)
    """How far pauses have moved the steps not timed by an explicit anchor."""
    exit_reason: str | None = None
    ended_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.status == "active"

    def step(self, step_id: str) -> StepRun | None:
        return next((s for s in self.steps if s.step_id == step_id), None)


@dataclass
class Lead:
    id: str
    email: str | None = None
    phone: str | None = None
    external_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    timezone: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    consent: dict[str, bool] = field(default_factory=dict)
    suppressions: dict[str, str] = field(default_factory=dict)
    """channel → reason (unsubscribed, bounced, stop, complaint, invalid_number …)."""
    score: ScoreState = field(default_factory=ScoreState)
    history: list[str] = field(default_factory=list)
    """Every event type ever seen, once each, in first-seen order."""
    sends: list[tuple[datetime, str]] = field(default_factory=list)
    """Messages a provider accepted (time, channel): what frequency caps count."""
    last_activity_at: datetime | None = None
    inactive_notified: bool = False
    last_inbound_whatsapp_at: datetime | None = None
    pause: Pause | None = None

    def address(self, channel: str) -> str | None:
        if channel == "email":
            return self.email
        if channel in ("sms", "whatsapp"):
            return self.phone
        return None

    def names(self, score: float) -> dict[str, Any]:
        """The lead as conditions and templates see it."""
        return {
            "id": self.id,
            "email": self.email,
            "phone": self.phone,
            "external_id": self.external_id,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "timezone": self.timezone,
            "score": score,
            "segment": self.score.segment,
            "attributes": self.attributes,
            "consent": self.consent,
        }


@dataclass
class LeadWorld:
    """Everything the engine needs to decide about one lead."""

    lead: Lead
    enrollments: list[Enrollment] = field(default_factory=list)
    actions: list[StepRun] = field(default_factory=list)
    """Lead-level one-offs: the scoring file's segment actions."""

    def active(self) -> list[Enrollment]:
        return [e for e in self.enrollments if e.active]


@dataclass(frozen=True)
class Entry:
    """One line of a lead's timeline: what the engine decided, and when."""

    at: datetime
    sequence: str | None
    step: str | None
    action: str
    channel: str | None = None
    reason: str | None = None
    subject: str | None = None
    enrollment: str | None = None


@dataclass
class Outcome:
    """What one engine call did: timeline entries, and events it emits for the shell to apply."""

    entries: list[Entry] = field(default_factory=list)
    emitted: list[Event] = field(default_factory=list)
    enrolled: list[str] = field(default_factory=list)
    exited: list[str] = field(default_factory=list)

    def extend(self, other: Outcome) -> None:
        self.entries.extend(other.entries)
        self.emitted.extend(other.emitted)
        self.enrolled.extend(other.enrolled)
        self.exited.extend(other.exited)
