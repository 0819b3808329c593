"""Where a step lands in time: its nominal time from the timing rule, then windows and quiet hours.

A step's nominal time counts from the anchor (`day:`, `at:`) or from the previous step's finish
(`after:`), never from a time a window moved another step to.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo

from worker.definitions import models
from worker.engine import timing
from worker.engine.timing import WindowRule

WEEKDAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
QUIET_CHANNELS = ("sms", "whatsapp")


@dataclass(frozen=True)
class Placement:
    """The zones and rules that place one step: the schedule's and the recipient's."""

    schedule_tz: ZoneInfo
    recipient_tz: ZoneInfo
    window: WindowRule | None
    quiet: tuple[time, time] | None


def window_rule(window: models.Window | None) -> WindowRule | None:
    if window is None:
        return None
    return WindowRule(
        days=frozenset(WEEKDAYS[d] for d in window.days) if window.days is not None else None,
        hours=timing.parse_hours(window.hours) if window.hours else None,
        skip_dates=frozenset(window.skip_dates),
    )


def nominal_time(
    step: models.Timing, anchor: datetime, previous_finished: datetime | None, tz: ZoneInfo
) -> datetime | None:
    """The step's time by its own rule; None for `after:` while the previous step is unfinished."""
    if step.day is not None:
        return timing.day_n(anchor, step.day, tz)
    if step.at is not None:
        return timing.add_duration(anchor, step.at, tz)
    assert step.after is not None
    if previous_finished is None:
        return None
    return timing.add_duration(previous_finished, step.after, tz)


def place(nominal: datetime, placement: Placement) -> datetime | None:
    """The first instant at or after `nominal` inside the window and outside quiet hours."""
    at = nominal
    for _ in range(16):  # a window and quiet hours that never overlap give up here
        opened = at
        if placement.window is not None:
            found = timing.next_opening(at, placement.window, placement.schedule_tz)
            if found is None:
                return None
            opened = found
        allowed = opened
        if placement.quiet is not None:
            allowed = timing.quiet_hours_end(opened, placement.quiet, placement.recipient_tz)
        if allowed == opened:
            return timing.to_utc(allowed)
        at = allowed
    return None


def choose_variant(lead_id: str, sequence_id: str, step_id: str, weights: list[float]) -> int:
    """Sticky A/B: the same lead always gets the same variant of a step."""
    digest = hashlib.sha256(f"{lead_id}:{sequence_id}:{step_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * sum(weights)
    for index, weight in enumerate(weights):
        point -= weight
        if point < 0:
            return index
    return len(weights) - 1


def step_channel(step: models.AnyStep | models.OneOffSend, variant: int | None) -> str:
    if isinstance(step, models.VariantsStep):
        return step.variants[variant or 0].channel
    return next(c for c in models.CHANNEL_KEYS if getattr(step, c, None) is not None)


def channel_content(step: models.AnyStep | models.OneOffSend, variant: int | None) -> object:
    """The template name, WhatsApp template, crm_task or notify that the step sends."""
    source: object = step
    if isinstance(step, models.VariantsStep):
        source = step.variants[variant or 0]
    channel = step_channel(step, variant)
    return getattr(source, channel)
