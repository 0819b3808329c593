"""Pure time arithmetic for sequences: calendar durations, send windows and quiet hours."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from worker.definitions.durations import Duration

HORIZON_DAYS = 800
_HOURS = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")
_HOURS_HINT = "expected HH:MM-HH:MM, like 09:00-18:00"


@dataclass(frozen=True)
class WindowRule:
    """When sending is allowed: weekdays (0=Monday), local hours [start, end), dates to skip."""

    days: frozenset[int] | None = None
    hours: tuple[time, time] | None = None
    skip_dates: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        if self.days is not None and not self.days <= frozenset(range(7)):
            raise ValueError(f"weekdays run from 0 (Monday) to 6 (Sunday), got {sorted(self.days)}")


def to_utc(at: datetime) -> datetime:
    """The same instant in UTC; a naive datetime is refused because its instant is unknown."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got naive {at.isoformat()}")
    return at.astimezone(UTC)


def localize(wall: datetime, tz: ZoneInfo) -> datetime:
    """The instant of a naive local wall time: gap times move forward, ambiguous ones come first."""
    if wall.tzinfo is not None:
        raise ValueError(f"expected a naive local wall time, got {wall.isoformat()}")
    # PEP 495: fold=0 uses the offset from before a transition, which is exactly both rules.
    return _resolve(wall, tz, 0)


def add_duration(start: datetime, duration: Duration, tz: ZoneInfo) -> datetime:
    """Move calendar days on the local calendar first, then add the elapsed seconds."""
    instant = to_utc(start)
    if duration.days:
        instant = localize(_wall(instant, tz) + timedelta(days=duration.days), tz)
    return instant + timedelta(seconds=duration.seconds)


def day_n(anchor: datetime, n: int, tz: ZoneInfo) -> datetime:
    """Day 1 is the anchor; Day N is the anchor's local wall-clock time N-1 calendar days later."""
    if n < 1:
        raise ValueError(f"days are numbered from 1, got Day {n}")
    return add_duration(anchor, Duration(days=n - 1), tz)


def in_window(at: datetime, rule: WindowRule, tz: ZoneInfo) -> bool:
    """Whether the instant lies inside the window, judged on the local calendar and clock."""
    local = _wall(to_utc(at), tz)
    clock, day = local.time(), local.date()
    hours = _hours(rule)
    if hours is None:
        return _day_allowed(day, rule)
    start, end = hours
    if start < end:
        return start <= clock < end and _day_allowed(day, rule)
    if clock >= start:
        return _day_allowed(day, rule)
    # After midnight a wrapping window still belongs to the day on which it opened.
    return clock < end and _day_allowed(day - timedelta(days=1), rule)


def next_opening(at: datetime, rule: WindowRule, tz: ZoneInfo) -> datetime | None:
    """The earliest instant >= `at` inside the window, or None within the horizon."""
    start = to_utc(at)
    if in_window(start, rule, tz):
        return start
    if rule.days is not None and not rule.days:
        return None
    # Start a day early: a window wrapping midnight belongs to the day it opened.
    day = _wall(start, tz).date() - timedelta(days=1)
    for _ in range(HORIZON_DAYS + 1):
        found = _openings(day, start, rule, tz)
        day += timedelta(days=1)
        if found:
            # Look one day further, as a clock change can put a later day's opening earlier.
            return min(found + _openings(day, start, rule, tz))
    return None


def in_quiet_hours(at: datetime, quiet: tuple[time, time], tz: ZoneInfo) -> bool:
    """Whether the local clock lies in the quiet hours [start, end), every day."""
    return not in_window(at, _awake(quiet), tz)


def quiet_hours_end(at: datetime, quiet: tuple[time, time], tz: ZoneInfo) -> datetime:
    """The first instant >= `at` outside quiet hours (their local end when `at` is inside)."""
    end = next_opening(at, _awake(quiet), tz)
    if end is None:  # cannot happen: the awake window is open on every day
        raise ValueError(f"quiet hours {quiet} never end")
    return end


def next_allowed(
    at: datetime, rule: WindowRule | None, quiet: tuple[time, time] | None, tz: ZoneInfo
) -> datetime | None:
    """The smallest instant >= `at` inside the window (if any) and outside quiet hours (if any)."""
    moment = to_utc(at)
    limit = moment + timedelta(days=HORIZON_DAYS)
    # A pass that does not settle moves past one quiet spell, so there is about one pass a day.
    while moment <= limit:
        if rule is not None:
            opening = next_opening(moment, rule, tz)
            if opening is None:
                return None
            moment = opening
        if quiet is None or not in_quiet_hours(moment, quiet, tz):
            return moment
        moment = quiet_hours_end(moment, quiet, tz)
    return None


def parse_hours(text: str) -> tuple[time, time]:
    """Parse `HH:MM-HH:MM` into (start, end); `24:00` is allowed as an end meaning midnight."""
    match = _HOURS.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a range of hours: {_HOURS_HINT}")
    sh, sm, eh, em = (int(part) for part in match.groups())
    if eh == 24 and em == 0:
        eh = 0
    if not (sh < 24 and eh < 24 and sm < 60 and em < 60):
        raise ValueError(
            f"{text!r} has a time out of range (00:00 to 23:59, or 24:00 as an end): {_HOURS_HINT}"
        )
    return time(sh, sm), time(eh, em)


def _resolve(wall: datetime, tz: ZoneInfo, fold: int) -> datetime:
    return wall.replace(tzinfo=tz, fold=fold).astimezone(UTC)


def _wall(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


def _hours(rule: WindowRule) -> tuple[time, time] | None:
    """The window's hours, or None when it is open all day."""
    if rule.hours is None or rule.hours[0] == rule.hours[1]:
        return None
    return rule.hours


def _day_allowed(day: date, rule: WindowRule) -> bool:
    weekday_ok = rule.days is None or day.weekday() in rule.days
    return weekday_ok and day not in rule.skip_dates


def _awake(quiet: tuple[time, time]) -> WindowRule:
    # The complement of quiet hours [start, end) is the every-day window [end, start);
    # start == end thus means no quiet hours at all.
    return WindowRule(hours=(quiet[1], quiet[0]))


def _openings(day: date, start: datetime, rule: WindowRule, tz: ZoneInfo) -> list[datetime]:
    """The candidates of `day` that are not before `start` and really lie inside the window."""
    return [c for c in _candidates(day, rule, tz) if c >= start and in_window(c, rule, tz)]


def _candidates(day: date, rule: WindowRule, tz: ZoneInfo) -> list[datetime]:
    """Instants on `day` where the window may open: its start, and any clock change."""
    found = _transitions(day, tz)
    if _day_allowed(day, rule):
        hours = _hours(rule)
        opens = time(0) if hours is None else hours[0]
        found += _resolutions(datetime.combine(day, opens), tz)
    return found


def _resolutions(wall: datetime, tz: ZoneInfo) -> list[datetime]:
    """Every instant showing `wall`; for a gap time, the first instant after the gap."""
    first, second = _resolve(wall, tz, 0), _resolve(wall, tz, 1)
    if _wall(first, tz) != wall:
        return [_transition(second, first, tz)]
    return sorted({first, second})


def _transitions(day: date, tz: ZoneInfo) -> list[datetime]:
    """The clock change during local `day`, if any (a jump back can reopen a window)."""
    start = localize(datetime.combine(day, time(0)), tz)
    end = localize(datetime.combine(day + timedelta(days=1), time(0)), tz)
    if start.astimezone(tz).utcoffset() == end.astimezone(tz).utcoffset():
        return []
    return [_transition(start, end, tz)]


def _transition(before: datetime, after: datetime, tz: ZoneInfo) -> datetime:
    """The first whole second in (before, after] that already has `after`'s UTC offset."""
    target = after.astimezone(tz).utcoffset()
    low, high = math.floor(before.timestamp()), math.ceil(after.timestamp())
    # Bisection: zoneinfo exposes no transition list, and tz changes fall on whole seconds.
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, tz).utcoffset() == target:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)
