"""Tests for lead scoring: points, decay, explanations and the segment Schmitt trigger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.engine.scoring import (
    FOLDED_EVENT_TYPE,
    Contribution,
    ScoreEntry,
    ScoreState,
    ScoringRules,
    SegmentChange,
    add_points,
    compact,
    evaluate_segment,
    explain,
    next_segment_drop,
    score_at,
)

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SEGMENTS = {"hot": 50.0, "warm": 20.0, "cold": 0.0}
LADDER = sorted(SEGMENTS, key=SEGMENTS.__getitem__)  # cold, warm, hot
SPEC_POINTS = {
    "pricing_page_viewed": 10.0,
    "webinar_attended": 7.0,
    "email_clicked": 3.0,
    "unsubscribed": -50.0,
}


def delta_rules(*deltas: float, half_life: timedelta | None = None) -> ScoringRules:
    """Rules whose event `+N`/`-N` is worth exactly N points."""
    return ScoringRules({f"{d:+g}": d for d in deltas}, half_life, SEGMENTS)


def up(segment: str, before: str | None, *, fire: bool = True) -> SegmentChange:
    return SegmentChange(before, segment, upward=True, fire=fire)


def down(segment: str | None, before: str) -> SegmentChange:
    return SegmentChange(before, segment, upward=False)


def test_example_sequence_step_by_step() -> None:
    rules = delta_rules(55, -10, 7, -37, 10, 30)
    state = ScoreState()
    assert evaluate_segment(state, rules, T0) == up("cold", None)
    steps: list[tuple[str, float, SegmentChange | None]] = [
        ("+55", 55, up("hot", "cold")),
        ("-10", 45, None),
        ("+7", 52, None),
        ("-37", 15, down("cold", "hot")),
        ("+10", 25, up("warm", "cold")),
        ("+30", 55, up("hot", "warm")),
    ]
    for i, (event, score, change) in enumerate(steps, start=1):
        at = T0 + i * timedelta(minutes=1)
        assert add_points(state, rules, event, at) == change, event
        assert score_at(state, rules, at) == score
    assert state.segment == "hot"


def test_new_lead_enters_cold_once_at_zero() -> None:
    state = ScoreState()
    rules = ScoringRules(SPEC_POINTS, None, SEGMENTS)
    assert state.segment is None
    assert score_at(state, rules, T0) == 0
    assert evaluate_segment(state, rules, T0) == up("cold", None)
    assert evaluate_segment(state, rules, T0 + DAY) is None


def test_jump_over_several_segments_enters_only_the_highest() -> None:
    state = ScoreState()
    assert add_points(state, delta_rules(60), "+60", T0) == up("hot", None)


def test_hot_drops_only_below_the_warm_line() -> None:
    rules = delta_rules(55, -35, -1)
    state = ScoreState()
    add_points(state, rules, "+55", T0)
    assert add_points(state, rules, "-35", T0) is None  # 20 is not below warm's 20
    assert state.segment == "hot"
    assert add_points(state, rules, "-1", T0) == down("cold", "hot")


def test_reentering_warm_through_hot_does_not_fire_warm_again() -> None:
    # the segment moves with hysteresis, and warm's actions re-arm only below cold's line (0):
    # leaving hot for cold and rising back over 20 enters warm again without firing it twice
    rules = delta_rules(25, 30, -40, 10, -30)
    state = ScoreState()
    assert add_points(state, rules, "+25", T0) == up("warm", None)
    assert add_points(state, rules, "+30", T0) == up("hot", "warm")
    assert add_points(state, rules, "-40", T0) == down("cold", "hot")
    assert add_points(state, rules, "+10", T0) == up("warm", "cold", fire=False)
    assert add_points(state, rules, "-30", T0) == down(None, "warm")  # -5: below cold's 0
    assert add_points(state, rules, "+30", T0) == up("warm", None)  # 25: re-armed, fires


def test_lowest_segment_is_left_only_strictly_below_its_threshold() -> None:
    rules = delta_rules(5, -5, -1)
    state = ScoreState()
    add_points(state, rules, "+5", T0)
    assert add_points(state, rules, "-5", T0) is None
    assert add_points(state, rules, "-1", T0) == down(None, "cold")
    # the lowest line has no lower one to re-arm below, so crossing it again re-enters
    assert add_points(state, rules, "+5", T0) == up("cold", None)


def test_decay_halves_the_score_after_one_half_life() -> None:
    rules = ScoringRules(SPEC_POINTS, timedelta(days=30), SEGMENTS)
    state = ScoreState()
    add_points(state, rules, "pricing_page_viewed", T0)
    assert score_at(state, rules, T0 + 30 * DAY) == 5.0
    assert score_at(state, rules, T0 + 60 * DAY) == 2.5
    add_points(state, rules, "webinar_attended", T0 + 10 * DAY)
    now = T0 + 10 * DAY
    halved = score_at(state, rules, now) / 2
    assert score_at(state, rules, now + 30 * DAY) == pytest.approx(halved, abs=0.01)


def test_without_decay_the_score_is_a_plain_sum() -> None:
    rules = ScoringRules(SPEC_POINTS, None, SEGMENTS)
    state = ScoreState()
    for event in ("pricing_page_viewed", "email_clicked", "email_clicked"):
        add_points(state, rules, event, T0)
    assert score_at(state, rules, T0 + 1000 * DAY) == 16


def test_explanation_is_newest_first_and_sums_to_the_score() -> None:
    rules = ScoringRules(SPEC_POINTS, timedelta(days=30), SEGMENTS)
    state = ScoreState()
    events = ["pricing_page_viewed", "email_clicked", "webinar_attended", "email_clicked"]
    for i, event in enumerate(events):
        add_points(state, rules, event, T0 + i * DAY, event_id=f"e{i}")
    now = T0 + 45 * DAY
    lines = explain(state, rules, now)
    assert [line.event_type for line in lines] == events[::-1]
    assert [line.at for line in lines] == [T0 + i * DAY for i in (3, 2, 1, 0)]
    assert lines[-1] == Contribution("pricing_page_viewed", T0, 10.0, 3.54)
    assert sum(line.current for line in lines) == pytest.approx(
        score_at(state, rules, now), abs=0.02
    )


def test_explanation_drops_only_what_decayed_below_a_cent() -> None:
    rules = ScoringRules(SPEC_POINTS, timedelta(days=1), SEGMENTS)
    state = ScoreState()
    add_points(state, rules, "email_clicked", T0)
    add_points(state, rules, "pricing_page_viewed", T0 + 20 * DAY)
    lines = explain(state, rules, T0 + 20 * DAY)
    assert [line.event_type for line in lines] == ["pricing_page_viewed"]
    no_decay = ScoringRules({"tiny": 0.001}, None, SEGMENTS)
    add_points(state, no_decay, "tiny", T0)
    assert len(explain(state, no_decay, T0 + 1000 * DAY)) == 3


def test_negative_points_pull_the_lead_out_of_its_segment() -> None:
    rules = ScoringRules(SPEC_POINTS, None, SEGMENTS)
    state = ScoreState()
    for _ in range(3):
        add_points(state, rules, "pricing_page_viewed", T0)
    assert state.segment == "warm"
    assert add_points(state, rules, "unsubscribed", T0) == down(None, "warm")
    assert score_at(state, rules, T0) == -20
    assert state.entries[-1] == ScoreEntry(T0, "unsubscribed", -50.0)


def test_unknown_and_zero_point_events_add_no_entry() -> None:
    rules = ScoringRules({**SPEC_POINTS, "page_viewed": 0}, None, SEGMENTS)
    state = ScoreState()
    assert add_points(state, rules, "no_such_event", T0) == up("cold", None)
    assert add_points(state, rules, "page_viewed", T0) is None
    assert state.entries == []


def test_entries_stay_in_time_order_when_events_arrive_late() -> None:
    rules = ScoringRules(SPEC_POINTS, timedelta(days=30), SEGMENTS)
    state = ScoreState()
    add_points(state, rules, "webinar_attended", T0 + DAY)
    add_points(state, rules, "email_clicked", T0)
    assert [entry.at for entry in state.entries] == [T0, T0 + DAY]
    assert score_at(state, rules, T0) == 10  # the later entry counts as awarded, never grows


def test_next_segment_drop_lands_exactly() -> None:
    rules = ScoringRules(SPEC_POINTS, timedelta(days=30), SEGMENTS)
    state = ScoreState()
    for event in ("pricing_page_viewed",) * 5 + ("webinar_attended",):
        add_points(state, rules, event, T0)
    assert state.segment == "hot"  # 57 points; the drop line is warm's 20
    drop = next_segment_drop(state, rules, T0)
    assert drop is not None
    assert drop.microsecond == 0
    assert T0 + 45 * DAY < drop < T0 + 46 * DAY  # 57 * 2**(-d/30) = 19.995 at d ≈ 45.3
    assert evaluate_segment(state, rules, drop - timedelta(seconds=1)) is None
    assert score_at(state, rules, drop - timedelta(seconds=1)) >= 20
    assert evaluate_segment(state, rules, drop) == down("cold", "hot")


def test_next_segment_drop_from_the_lowest_segment() -> None:
    rules = ScoringRules({"click": 3.0}, timedelta(days=7), {"engaged": 2.0})
    state = ScoreState()
    add_points(state, rules, "click", T0)
    drop = next_segment_drop(state, rules, T0)
    assert drop is not None
    assert evaluate_segment(state, rules, drop - timedelta(seconds=1)) is None
    assert evaluate_segment(state, rules, drop) == down(None, "engaged")


@pytest.mark.parametrize(
    ("rules", "events"),
    [
        pytest.param(
            ScoringRules(SPEC_POINTS, None, SEGMENTS), ["pricing_page_viewed"] * 6, id="no-decay"
        ),
        pytest.param(ScoringRules(SPEC_POINTS, timedelta(days=30), {}), [], id="no-segment"),
        pytest.param(
            ScoringRules(SPEC_POINTS, timedelta(days=30), SEGMENTS),
            ["email_clicked"],
            id="cold-at-0",
        ),
        pytest.param(
            ScoringRules({"x": -30.0}, timedelta(days=30), {"low": -40.0, "mid": -20.0}),
            ["x"],
            id="negative-score-rises",
        ),
    ],
)
def test_next_segment_drop_none_when_nothing_will_drop(
    rules: ScoringRules, events: list[str]
) -> None:
    state = ScoreState()
    evaluate_segment(state, rules, T0)
    for event in events:
        add_points(state, rules, event, T0)
    assert next_segment_drop(state, rules, T0) is None


def test_next_segment_drop_is_now_when_already_due() -> None:
    rules = ScoringRules(SPEC_POINTS, timedelta(days=1), SEGMENTS)
    state = ScoreState([ScoreEntry(T0, "pricing_page_viewed", 10.0)], segment="hot")
    assert next_segment_drop(state, rules, T0) == T0  # 10 is already below warm's 20


def test_compact_folds_faded_entries_without_moving_the_score() -> None:
    rules = ScoringRules(SPEC_POINTS, timedelta(days=1), SEGMENTS)
    state = ScoreState()
    for i in range(30):
        add_points(state, rules, "email_clicked", T0 + i * timedelta(hours=1))
    add_points(state, rules, "pricing_page_viewed", T0 + 20 * DAY)
    now = T0 + 20 * DAY
    before = score_at(state, rules, now)
    compact(state, rules, now)
    assert [entry.event_type for entry in state.entries] == [
        FOLDED_EVENT_TYPE,
        "pricing_page_viewed",
    ]
    assert score_at(state, rules, now) == before
    assert score_at(state, rules, now + 5 * DAY) == pytest.approx(before / 32, abs=0.01)


def test_compact_keeps_the_newest_entries() -> None:
    rules = ScoringRules(SPEC_POINTS, None, SEGMENTS)
    state = ScoreState()
    for i in range(10):
        add_points(state, rules, "email_clicked", T0 + i * DAY)
    compact(state, rules, T0 + 10 * DAY, keep=4)
    assert len(state.entries) == 5
    assert state.entries[0] == ScoreEntry(T0 + 5 * DAY, FOLDED_EVENT_TYPE, 18.0)
    assert score_at(state, rules, T0 + 10 * DAY) == 30
    with pytest.raises(ValueError, match="keep"):
        compact(state, rules, T0, keep=-1)


def test_rules_reject_bad_half_life_and_tied_thresholds() -> None:
    with pytest.raises(ValueError, match="half-life"):
        ScoringRules({}, timedelta(0), {})
    with pytest.raises(ValueError, match="threshold"):
        ScoringRules({}, None, {"a": 10, "b": 10})
    assert ScoringRules.empty() == ScoringRules({}, None, {})


def test_segment_missing_from_the_rules_counts_as_none() -> None:
    rules = ScoringRules(SPEC_POINTS, None, SEGMENTS)
    assert evaluate_segment(ScoreState(segment="vip"), rules, T0) == up("cold", "vip")
    empty = ScoringRules.empty()
    assert evaluate_segment(ScoreState(segment="vip"), empty, T0) == down(None, "vip")


# --- properties -------------------------------------------------------------------------------

DELTAS = (-50.0, -37.0, -10.0, -3.0, 3.0, 7.0, 10.0, 30.0)
steps = st.lists(
    st.tuples(st.sampled_from(DELTAS), st.integers(min_value=0, max_value=40 * 24)),
    max_size=40,
)


def _index(segment: str | None) -> int:
    return -1 if segment is None else LADDER.index(segment)


def _drop_line(segment: str) -> float:
    return SEGMENTS[LADDER[max(0, _index(segment) - 1)]]


def _check_consistent(segment: str | None, score: float) -> None:
    """The segment is never below a reached threshold and never left past its drop line."""
    reached = [name for name in LADDER if SEGMENTS[name] <= score]
    if segment is None:
        assert not reached
        return
    assert score >= _drop_line(segment)
    assert _index(segment) >= (_index(reached[-1]) if reached else -1)


@settings(max_examples=300, deadline=None)
@given(steps, st.sampled_from([None, timedelta(days=3), timedelta(days=30)]))
def test_segment_changes_follow_the_schmitt_trigger(
    sequence: list[tuple[float, int]], half_life: timedelta | None
) -> None:
    rules = delta_rules(*DELTAS, half_life=half_life)
    state = ScoreState()
    at = T0
    entered: set[str] = set()  # segments entered from below and not left downward since
    changes = [evaluate_segment(state, rules, at)]
    for delta, hours in sequence:
        at += timedelta(hours=hours)
        before = state.segment
        change = add_points(state, rules, f"{delta:+g}", at)
        score = score_at(state, rules, at)
        changes.append(change)
        _check_consistent(state.segment, score)
        if change is None:
            assert state.segment == before
            continue
        assert change.from_segment == before
        assert change.to_segment == state.segment
        if change.upward:
            assert change.to_segment is not None
            assert change.to_segment not in entered
            assert _index(change.to_segment) > _index(before)
            entered.add(change.to_segment)
        else:
            assert before is not None
            assert score < _drop_line(before)
            entered = {name for name in entered if _index(name) <= _index(state.segment)}


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(LADDER[1:]),
    st.lists(st.floats(min_value=0.01, max_value=19.99), min_size=1, max_size=30),
)
def test_swings_around_a_line_fire_nothing_twice(line: str, amplitudes: list[float]) -> None:
    threshold = SEGMENTS[line]
    state = ScoreState()
    evaluate_segment(state, delta_rules(), T0)
    fired: list[str] = []
    for i, amplitude in enumerate(amplitudes):
        # alternate above and below the line, never reaching the next lower one
        target = threshold + (amplitude if i % 2 == 0 else -amplitude)
        state.entries = [ScoreEntry(T0, "set", target)]
        change = evaluate_segment(state, delta_rules(), T0)
        if change is not None and change.upward and change.to_segment is not None:
            fired.append(change.to_segment)
    assert fired.count(line) <= 1


@settings(max_examples=200, deadline=None)
@given(steps, st.integers(min_value=0, max_value=5))
def test_compact_never_changes_score_or_segment(
    sequence: list[tuple[float, int]], keep: int
) -> None:
    rules = delta_rules(*DELTAS, half_life=timedelta(days=1))
    state = ScoreState()
    at = T0
    for delta, hours in sequence:
        at += timedelta(hours=hours)
        add_points(state, rules, f"{delta:+g}", at)
    later = at + timedelta(days=2)
    copy = ScoreState(list(state.entries), state.segment)
    compact(copy, rules, at, keep=keep)
    assert len(copy.entries) <= keep + 1
    assert score_at(copy, rules, later) == pytest.approx(score_at(state, rules, later), abs=0.011)
    assert evaluate_segment(copy, rules, at) == evaluate_segment(state, rules, at)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([3.0, 7.0, 10.0, 30.0]), min_size=1, max_size=12),
    st.integers(min_value=1, max_value=60),
    st.sampled_from([0.0, 5.0]),
)
def test_next_segment_drop_is_the_first_second_that_moves(
    points: list[float], half_life_days: int, lowest: float
) -> None:
    segments = {**SEGMENTS, "cold": lowest}
    rules = ScoringRules({f"{p:+g}": p for p in points}, timedelta(days=half_life_days), segments)
    state = ScoreState()
    for p in points:
        add_points(state, rules, f"{p:+g}", T0)
    drop = next_segment_drop(state, rules, T0)
    lines = sorted(segments.values())
    if state.segment is None or lines[max(0, lines.index(segments[state.segment]) - 1)] <= 0:
        assert drop is None
        return
    assert drop is not None
    assert drop > T0
    just_before = ScoreState(list(state.entries), state.segment)
    assert evaluate_segment(just_before, rules, drop - timedelta(seconds=1)) is None
    change = evaluate_segment(state, rules, drop)
    assert change is not None
    assert not change.upward
