"""The lead page's lines: plain, frozen data the console's template reads (support/timeline.py
builds them): every instant written in the lead's zone and the viewer's, every reason in words."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class When:
    """One instant, written in the lead's zone and in the viewer's."""

    utc: datetime
    lead: str
    viewer: str
    short: str
    """`Tue 09:00` in the lead's zone (with the date when more than a few days away)."""


@dataclass(frozen=True)
class ConsentLine:
    channel: str
    granted: bool | None
    at: When | None
    source: str | None
    suppressed: str | None
    """The suppression on the channel, in words."""


@dataclass(frozen=True)
class StepLine:
    sequence: str
    enrollment_id: str
    step: str
    channel: str | None
    status: str
    """The row's: pending, queued, claimed, sending, sent, skipped, failed, unknown."""
    state: str
    """In words: sent, scheduled, held, waiting, being sent, skipped, failed, in doubt."""
    when: When | None
    reason: str | None
    code: str | None
    variant: int | None
    message_id: str | None


@dataclass(frozen=True)
class EnrollmentLine:
    id: str
    sequence: str
    name: str
    key: str | None
    status: str
    paused: str | None
    enrolled: When
    ended: When | None
    ended_how: str | None
    steps: list[StepLine]


@dataclass(frozen=True)
class MessageLine:
    id: str
    step: str | None
    channel: str
    to: str | None
    subject: str | None
    status: str
    sent: When
    has_copy: bool
    segments: int | None


@dataclass(frozen=True)
class EventLine:
    id: str
    type: str
    at: When
    source: str
    properties: dict[str, Any]


@dataclass(frozen=True)
class ActionLine:
    at: When
    actor: str
    action: str
    target: str | None
    reason: str | None
    details: dict[str, Any] | None


@dataclass(frozen=True)
class PendingStep:
    """A step still to come, which a pause would hold and an exit would end."""

    sequence: str
    step: str
    channel: str | None
    due_at: datetime | None


@dataclass(frozen=True)
class ScheduledLine:
    sequence: str
    step: str
    channel: str | None
    due: When | None


@dataclass(frozen=True)
class SequenceChoice:
    """A sequence support can enroll the lead in, and the properties it needs from them."""

    id: str
    name: str
    key: str | None = None
    """The property a keyed sequence keeps one enrollment per (`cart_token`)."""
    anchor: str | None = None
    """The property holding the time an anchored sequence counts from (`starts_at`)."""


@dataclass(frozen=True)
class LeadPage:
    id: str
    email: str | None
    phone: str | None
    external_id: str | None
    name: str | None
    erased: bool
    lead_timezone: str
    viewer_timezone: str
    attributes: dict[str, Any]
    consent: list[ConsentLine]
    suppressions: list[tuple[str, str]]
    score: float
    score_explanation: list[tuple[str, When, float, float]]
    """(event type, when, points, what they count now)."""
    segment: str | None
    paused: str | None
    enrollments: list[EnrollmentLine]
    timeline: list[StepLine]
    """Every step of every enrollment, in time order."""
    messages: list[MessageLine]
    events: list[EventLine]
    actions: list[ActionLine]
    scheduled: list[ScheduledLine]
    sequences: list[SequenceChoice] = field(default_factory=list)

    @property
    def active_sequences(self) -> list[str]:
        return sorted({e.sequence for e in self.enrollments if e.status == "active"})
