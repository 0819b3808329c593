"""A sequence's counts over a date range, read from the outcome counters (worker/store/
counters.py), never from a scan of the raw rows: per step and variant (optionally one version)
scheduled, sent, delivered, opened, clicked, replied, failed (by reason), skipped (by reason),
unsubscribed, converted; per sequence entered, completed, exited, converted; and what waits now
(read live). An outcome counts in the UTC hour it happened; [start, end) takes the hours that
start in it. Issue 14's funnels read this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlmodel import Session

from worker.kit.errors import InvalidInput
from worker.store import counter_reads
from worker.store.counter_rows import ENROLLMENT, NO_VARIANT

StepKey = tuple[str, int | None]
"""(step id, variant index): one line of the funnel."""
COUNTED = ("scheduled", "sent", "delivered", "opened", "clicked", "replied", "unsubscribed",
           "converted")  # fmt: skip
IN_FLIGHT = ("pending", "queued", "claimed", "sending")


class BadRange(InvalidInput):
    """A date range that ends before it starts, or names a time without its zone."""


@dataclass
class StepCounts:
    step: str
    variant: int | None
    scheduled: int = 0
    sent: int = 0
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    replied: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    unsubscribed: int = 0
    converted: int = 0
    waiting: int = 0
    """Pending, queued, claimed or being handed over now (live, whatever the range)."""
    unknown: int = 0
    """Handed to a provider with no answer recorded, now (live)."""


@dataclass
class SequenceCounts:
    sequence: str
    version: str | None
    start: datetime | None
    end: datetime | None
    entered: int = 0
    completed: int = 0
    exited: int = 0
    converted: int = 0
    steps: dict[StepKey, StepCounts] = field(default_factory=dict)

    def line(self, key: StepKey) -> StepCounts:
        if key not in self.steps:
            self.steps[key] = StepCounts(*key)
        return self.steps[key]


def check_range(start: datetime | None, end: datetime | None) -> None:
    for name, value in (("from", start), ("to", end)):
        if value is not None and value.tzinfo is None:
            raise BadRange(f"{name}: give a time with its zone, e.g. 2026-12-01T00:00:00Z")
    if start is not None and end is not None and end <= start:
        raise BadRange(f"to ({end.isoformat()}) must come after from ({start.isoformat()})")


def read(
    session: Session,
    sequence_id: str,
    *,
    version: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> SequenceCounts:
    """The counts of one sequence (one version of it) over [start, end) (all time when not
    given), and what waits now."""
    check_range(start, end)
    found = SequenceCounts(
        sequence_id,
        version,
        start.astimezone(UTC) if start else None,
        end.astimezone(UTC) if end else None,
    )
    for count in counter_reads.sums(
        session, sequence_id, version=version, start=found.start, end=found.end
    ):
        if count.step == ENROLLMENT:
            if count.outcome in ("entered", "completed", "exited", "converted"):
                setattr(found, count.outcome, getattr(found, count.outcome) + count.count)
            continue
        line = found.line((count.step, None if count.variant == NO_VARIANT else count.variant))
        if count.outcome in ("failed", "skipped"):
            by_reason: dict[str, int] = getattr(line, count.outcome)
            reason = count.reason or "unknown"
            by_reason[reason] = by_reason.get(reason, 0) + count.count
        elif count.outcome in COUNTED:
            setattr(line, count.outcome, getattr(line, count.outcome) + count.count)
    for step, variant, status, n in counter_reads.waiting(session, sequence_id, version):
        line = found.line((step, variant))
        if status in IN_FLIGHT:
            line.waiting += n
        else:
            line.unknown += n
    return found
