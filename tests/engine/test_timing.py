"""Tests for worker.engine.timing: hand-worked instants plus hypothesis properties."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.definitions.durations import Duration, parse_duration
from worker.engine.timing import (
    WindowRule,
    add_duration,
    day_n,
    in_quiet_hours,
    in_window,
    localize,
    next_allowed,
    next_opening,
    parse_hours,
    quiet_hours_end,
    to_utc,
)

BERLIN = ZoneInfo("Europe/Berlin")
QUIET = (time(21), time(8))
WEEKDAYS_9_TO_6 = WindowRule(days=frozenset(range(5)), hours=(time(9), time(18)))
FRIDAY_NIGHTS = WindowRule(days=frozenset({4}), hours=(time(22), time(2)))


def berlin(
    year: int, month: int, day: int, hour: int, minute: int = 0, second: int = 0, fold: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=BERLIN, fold=fold)


def utc(year: int, month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# --- instants and durations ------------------------------------------------------------------


def test_to_utc_converts_and_refuses_naive() -> None:
    assert to_utc(berlin(2026, 7, 1, 12)) == utc(2026, 7, 1, 10)
    assert to_utc(berlin(2026, 7, 1, 12)).tzinfo is UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        to_utc(datetime(2026, 7, 1, 12))


def test_localize_moves_a_gap_time_forward_by_the_gap() -> None:
    # 02:00-03:00 does not exist on 2026-03-29; 02:30 becomes 03:30 CEST (UTC+2).
    assert localize(datetime(2026, 3, 29, 2, 30), BERLIN) == utc(2026, 3, 29, 1, 30)


def test_localize_takes_the_first_of_two_ambiguous_times() -> None:
    # 02:30 happens twice on 2026-10-25: first in CEST (00:30Z), then in CET (01:30Z).
    assert localize(datetime(2026, 10, 25, 2, 30), BERLIN) == utc(2026, 10, 25, 0, 30)


def test_localize_refuses_an_aware_datetime() -> None:
    with pytest.raises(ValueError, match="naive"):
        localize(berlin(2026, 7, 1, 12), BERLIN)


def test_day_2_keeps_the_wall_clock_time_across_the_end_of_summer_time() -> None:
    anchor = berlin(2026, 10, 24, 10)  # Saturday 10:00 CEST = 08:00Z
    assert day_n(anchor, 1, BERLIN) == utc(2026, 10, 24, 8)
    assert day_n(anchor, 2, BERLIN) == utc(2026, 10, 25, 9)  # Sunday 10:00 CET, not 08:00Z
    assert day_n(anchor, 3, BERLIN) == utc(2026, 10, 26, 9)


def test_day_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        day_n(berlin(2026, 10, 24, 10), 0, BERLIN)


def test_one_day_and_24_hours_differ_across_a_dst_change() -> None:
    start = berlin(2026, 10, 24, 10)  # 08:00Z
    assert add_duration(start, parse_duration("1d"), BERLIN) == utc(2026, 10, 25, 9)
    assert add_duration(start, parse_duration("24h"), BERLIN) == utc(2026, 10, 25, 8)


def test_negative_durations() -> None:
    start = berlin(2026, 10, 25, 10)  # Sunday 10:00 CET = 09:00Z
    assert add_duration(start, parse_duration("-24h"), BERLIN) == utc(2026, 10, 24, 9)
    assert add_duration(start, parse_duration("-1d"), BERLIN) == utc(2026, 10, 24, 8)


def test_days_apply_before_elapsed_hours() -> None:
    # Sat 10:00 CEST + 1d = Sun 10:00 CET (09:00Z), + 12h = 21:00Z; 36h flat would be 20:00Z.
    start = berlin(2026, 10, 24, 10)
    assert add_duration(start, parse_duration("1d12h"), BERLIN) == utc(2026, 10, 25, 21)
    assert add_duration(start, Duration(seconds=36 * 3600), BERLIN) == utc(2026, 10, 25, 20)


def test_a_calendar_day_landing_in_a_gap_moves_forward() -> None:
    start = berlin(2026, 3, 28, 2, 30)  # CET = 01:30Z; next day's 02:30 does not exist
    assert add_duration(start, Duration(days=1), BERLIN) == utc(2026, 3, 29, 1, 30)


# --- windows ---------------------------------------------------------------------------------


def test_weekday_window_pushes_sunday_to_monday_morning() -> None:
    sunday = berlin(2026, 5, 3, 10)
    assert not in_window(sunday, WEEKDAYS_9_TO_6, BERLIN)
    assert next_opening(sunday, WEEKDAYS_9_TO_6, BERLIN) == utc(2026, 5, 4, 7)  # 09:00 CEST


def test_an_instant_inside_the_window_is_returned_in_utc() -> None:
    tuesday = berlin(2026, 5, 5, 17, 59, 30)
    assert next_opening(tuesday, WEEKDAYS_9_TO_6, BERLIN) == utc(2026, 5, 5, 15, 59, 30)
    # The end is excluded: 18:00 on Tuesday waits for Wednesday 09:00.
    assert next_opening(berlin(2026, 5, 5, 18), WEEKDAYS_9_TO_6, BERLIN) == utc(2026, 5, 6, 7)


def test_window_wrapping_midnight_belongs_to_the_day_it_opened() -> None:
    assert in_window(berlin(2026, 5, 8, 22), FRIDAY_NIGHTS, BERLIN)  # Friday 22:00
    assert in_window(berlin(2026, 5, 9, 1), FRIDAY_NIGHTS, BERLIN)  # Saturday 01:00
    assert not in_window(berlin(2026, 5, 9, 2), FRIDAY_NIGHTS, BERLIN)
    assert not in_window(berlin(2026, 5, 8, 1), FRIDAY_NIGHTS, BERLIN)  # Thursday's night
    saturday_night = berlin(2026, 5, 9, 22, 30)
    assert not in_window(saturday_night, FRIDAY_NIGHTS, BERLIN)
    assert next_opening(saturday_night, FRIDAY_NIGHTS, BERLIN) == utc(2026, 5, 15, 20)


def test_skip_dates_skip_christmas() -> None:
    rule = WindowRule(
        days=frozenset(range(5)),
        hours=(time(9), time(18)),
        skip_dates=frozenset({date(2026, 12, 25)}),
    )
    # Thursday 24th after hours -> Friday 25th is skipped -> Monday 28th 09:00 CET.
    assert next_opening(berlin(2026, 12, 24, 18, 30), rule, BERLIN) == utc(2026, 12, 28, 8)


def test_a_skipped_friday_also_closes_its_night_after_midnight() -> None:
    rule = WindowRule(
        days=frozenset({4}), hours=(time(22), time(2)), skip_dates=frozenset({date(2026, 12, 25)})
    )
    assert not in_window(berlin(2026, 12, 26, 1), rule, BERLIN)
    assert in_window(berlin(2027, 1, 2, 1), rule, BERLIN)


def test_a_window_with_no_allowed_days_never_opens() -> None:
    rule = WindowRule(days=frozenset(), hours=(time(9), time(18)))
    assert next_opening(berlin(2026, 5, 4, 10), rule, BERLIN) is None
    assert next_allowed(berlin(2026, 5, 4, 10), rule, QUIET, BERLIN) is None


def test_equal_start_and_end_means_all_day() -> None:
    rule = WindowRule(days=frozenset({0}), hours=(time(9), time(9)))
    assert in_window(berlin(2026, 5, 4, 0, 0), rule, BERLIN)
    assert in_window(berlin(2026, 5, 4, 23, 59), rule, BERLIN)
    assert next_opening(berlin(2026, 5, 5, 3), rule, BERLIN) == utc(2026, 5, 10, 22)  # Mon 00:00


def test_an_opening_in_a_dst_gap_opens_when_the_gap_ends() -> None:
    rule = WindowRule(hours=(time(2, 30), time(18)))
    # 02:30 does not exist on 2026-03-29; the first instant after the gap is 03:00 CEST.
    assert next_opening(berlin(2026, 3, 28, 20), rule, BERLIN) == utc(2026, 3, 29, 1)


def test_the_repeated_hour_can_reopen_a_window() -> None:
    rule = WindowRule(hours=(time(2, 30), time(2, 45)))
    first_pass = berlin(2026, 10, 25, 2, 50)  # 02:50 CEST = 00:50Z, just after the window
    assert next_opening(first_pass, rule, BERLIN) == utc(2026, 10, 25, 1, 30)  # 02:30 CET


def test_window_days_must_be_weekdays() -> None:
    with pytest.raises(ValueError, match="Monday"):
        WindowRule(days=frozenset({7}))


# --- quiet hours -----------------------------------------------------------------------------


def test_sms_in_quiet_hours_waits_for_the_morning() -> None:
    evening = berlin(2026, 5, 4, 21, 30)
    assert in_quiet_hours(evening, QUIET, BERLIN)
    assert quiet_hours_end(evening, QUIET, BERLIN) == utc(2026, 5, 5, 6)  # 08:00 CEST
    assert next_allowed(evening, None, QUIET, BERLIN) == utc(2026, 5, 5, 6)


def test_quiet_hours_edges() -> None:
    assert quiet_hours_end(berlin(2026, 5, 5, 7, 59), QUIET, BERLIN) == utc(2026, 5, 5, 6)
    assert not in_quiet_hours(berlin(2026, 5, 5, 8), QUIET, BERLIN)
    assert quiet_hours_end(berlin(2026, 5, 5, 8), QUIET, BERLIN) == utc(2026, 5, 5, 6)
    assert in_quiet_hours(berlin(2026, 5, 5, 21), QUIET, BERLIN)
    assert not in_quiet_hours(berlin(2026, 5, 5, 20, 59, 59), QUIET, BERLIN)


def test_quiet_hours_that_do_not_wrap() -> None:
    lunch = (time(12), time(13))
    assert in_quiet_hours(berlin(2026, 5, 5, 12, 30), lunch, BERLIN)
    assert not in_quiet_hours(berlin(2026, 5, 5, 13), lunch, BERLIN)
    assert quiet_hours_end(berlin(2026, 5, 5, 12, 30), lunch, BERLIN) == utc(2026, 5, 5, 11)


def test_equal_quiet_start_and_end_means_no_quiet_hours() -> None:
    assert not in_quiet_hours(berlin(2026, 5, 5, 3), (time(8), time(8)), BERLIN)


def test_quiet_hours_ending_in_a_gap_end_with_the_gap() -> None:
    quiet = (time(21), time(2, 30))
    night = berlin(2026, 3, 29, 1, 45)  # CET = 00:45Z
    assert quiet_hours_end(night, quiet, BERLIN) == utc(2026, 3, 29, 1)  # 03:00 CEST


def test_quiet_hours_in_the_repeated_hour_end_at_its_second_pass() -> None:
    quiet = (time(21), time(2, 30))
    second_pass = berlin(2026, 10, 25, 2, 15, fold=1)  # CET = 01:15Z
    assert quiet_hours_end(second_pass, quiet, BERLIN) == utc(2026, 10, 25, 1, 30)


def test_next_allowed_combines_window_and_quiet_hours() -> None:
    rule = WindowRule(hours=(time(7), time(22)))
    assert next_allowed(berlin(2026, 5, 5, 6), rule, QUIET, BERLIN) == utc(2026, 5, 5, 6)
    assert next_allowed(berlin(2026, 5, 5, 21, 30), rule, QUIET, BERLIN) == utc(2026, 5, 6, 6)
    assert next_allowed(berlin(2026, 5, 3, 10), WEEKDAYS_9_TO_6, QUIET, BERLIN) == utc(
        2026, 5, 4, 7
    )


def test_next_allowed_without_constraints_is_the_instant_itself() -> None:
    assert next_allowed(berlin(2026, 5, 5, 3), None, None, BERLIN) == utc(2026, 5, 5, 1)


def test_next_allowed_gives_up_when_the_window_lies_inside_quiet_hours() -> None:
    assert next_allowed(berlin(2026, 5, 5, 12), FRIDAY_NIGHTS, QUIET, BERLIN) is None


# --- parse_hours -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("09:00-18:00", (time(9), time(18))),
        ("22:00-02:00", (time(22), time(2))),
        (" 9:30 - 17:45 ", (time(9, 30), time(17, 45))),
        ("00:00-24:00", (time(0), time(0))),
        ("18:00-24:00", (time(18), time(0))),
    ],
)
def test_parse_hours(text: str, expected: tuple[time, time]) -> None:
    assert parse_hours(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "9-18", "09:00", "09:00-", "25:00-26:00", "09:60-10:00", "24:00-09:00", "09:00-24:30"],
)
def test_parse_hours_rejects_bad_input(text: str) -> None:
    with pytest.raises(ValueError, match="expected HH:MM-HH:MM, like 09:00-18:00"):
        parse_hours(text)


# --- properties ------------------------------------------------------------------------------

ZONES = [ZoneInfo(name) for name in ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe")]
ZONES += [ZoneInfo("America/Sao_Paulo"), ZoneInfo("Asia/Kolkata"), ZoneInfo("UTC")]
# Clock changes, including Lord Howe's half hour and Sao Paulo's changes at midnight.
CHANGES = [
    utc(2026, 3, 29, 1),
    utc(2026, 10, 25, 1),
    utc(2026, 3, 8, 7),
    utc(2026, 11, 1, 6),
    utc(2026, 4, 4, 15),
    utc(2026, 10, 3, 15, 30),
    utc(2018, 11, 4, 3),
    utc(2019, 2, 17, 2),
]
THREE_DAYS = 3 * 24 * 3600

zones = st.sampled_from(ZONES)
moments = st.builds(
    lambda base, shift: base + timedelta(seconds=shift),
    st.sampled_from(CHANGES),
    st.integers(-THREE_DAYS, THREE_DAYS),
)
clock_times = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))
hour_pairs = st.tuples(clock_times, clock_times)


@st.composite
def rules(draw: st.DrawFn) -> WindowRule:
    days = draw(st.none() | st.frozensets(st.integers(0, 6), min_size=1))
    hours = draw(st.none() | hour_pairs)
    first = draw(st.sampled_from(CHANGES)).date()
    skips = draw(st.frozensets(st.integers(-3, 7), max_size=4))
    return WindowRule(days, hours, frozenset(first + timedelta(days=n) for n in skips))


def whole_minutes(start: datetime, stop: datetime) -> list[datetime]:
    """Every whole UTC minute in [start, stop)."""
    first = start.replace(second=0, microsecond=0)
    if first < start:
        first += timedelta(minutes=1)
    count = max(0, -(-(stop - first) // timedelta(minutes=1)))
    return [first + timedelta(minutes=n) for n in range(count)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(at=moments, rule=rules(), tz=zones)
def test_next_opening_is_the_first_instant_inside_the_window(
    at: datetime, rule: WindowRule, tz: ZoneInfo
) -> None:
    opening = next_opening(at, rule, tz)
    assert opening is not None
    assert opening.tzinfo is UTC
    assert opening >= at
    assert in_window(opening, rule, tz)
    if opening - at <= timedelta(days=3):
        assert not any(in_window(m, rule, tz) for m in whole_minutes(at, opening))


@settings(max_examples=60, deadline=None)
@given(at=moments, rule=st.none() | rules(), quiet=st.none() | hour_pairs, tz=zones)
def test_next_allowed_is_in_the_window_and_never_in_quiet_hours(
    at: datetime, rule: WindowRule | None, quiet: tuple[time, time] | None, tz: ZoneInfo
) -> None:
    allowed = next_allowed(at, rule, quiet, tz)
    if allowed is None:
        assert rule is not None
        assert quiet is not None
        return
    assert allowed >= at
    assert rule is None or in_window(allowed, rule, tz)
    assert quiet is None or not in_quiet_hours(allowed, quiet, tz)
    if allowed - at <= timedelta(days=1):
        for minute in whole_minutes(at, allowed):
            fits = rule is None or in_window(minute, rule, tz)
            assert not (fits and (quiet is None or not in_quiet_hours(minute, quiet, tz)))


@settings(max_examples=100, deadline=None)
@given(at=moments, quiet=hour_pairs, tz=zones)
def test_quiet_hours_end_is_outside_quiet_hours(
    at: datetime, quiet: tuple[time, time], tz: ZoneInfo
) -> None:
    end = quiet_hours_end(at, quiet, tz)
    assert end >= at
    assert not in_quiet_hours(end, quiet, tz)
    assert (end == at) == (not in_quiet_hours(at, quiet, tz))


@settings(max_examples=100, deadline=None)
@given(at=moments, seconds=st.integers(-THREE_DAYS, THREE_DAYS), tz=zones)
def test_hours_minutes_and_seconds_are_elapsed_time(
    at: datetime, seconds: int, tz: ZoneInfo
) -> None:
    assert add_duration(at, Duration(seconds=seconds), tz) == at + timedelta(seconds=seconds)


@settings(max_examples=100, deadline=None)
@given(at=moments, n=st.integers(2, 30), tz=zones)
def test_day_n_keeps_the_wall_clock_time(at: datetime, n: int, tz: ZoneInfo) -> None:
    wall = at.astimezone(tz).replace(tzinfo=None) + timedelta(days=n - 1)
    target = day_n(at, n, tz)
    assert target == localize(wall, tz)
    if localize(wall, tz).astimezone(tz).replace(tzinfo=None) == wall:  # not in a gap
        assert target.astimezone(tz).replace(tzinfo=None) == wall


def test_zone_never_raises_on_odd_names() -> None:
    from worker.kit.clock import zone

    assert zone("Europe/Berlin") == ZoneInfo("Europe/Berlin")
    for name in ("0" * 300 + "\x80", "../etc/passwd", "/etc/localtime", "", None, "Mars/Base"):
        assert zone(name) is None
