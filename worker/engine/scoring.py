"""Lead scoring: points per event, exponential decay, segments with a Schmitt-trigger hysteresis."""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

FOLDED_EVENT_TYPE = "earlier_events"
"""Event type of the single entry that `compact` folds faded and overflowing entries into."""

_VISIBLE = 0.01
_SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class ScoringRules:
    """Points per event type, an optional half-life and segments as name -> threshold."""

    points: Mapping[str, float]
    half_life: timedelta | None
    segments: Mapping[str, float]

    def __post_init__(self) -> None:
        if self.half_life is not None and self.half_life <= timedelta(0):
            raise ValueError(f"the decay half-life must be positive, got {self.half_life}")
        thresholds = list(self.segments.values())
        if not all(math.isfinite(t) for t in thresholds):
            raise ValueError("segment thresholds must be finite numbers")
        if len(set(thresholds)) != len(thresholds):
            # "the highest threshold reached wins" has no answer for a tie
            raise ValueError("two segments share a threshold")

    @staticmethod
    def empty() -> ScoringRules:
        """No points, no decay, no segments."""
        return ScoringRules(points={}, half_life=None, segments={})


@dataclass(frozen=True)
class ScoreEntry:
    """Points awarded for one event."""

    at: datetime
    event_type: str
    points: float
    event_id: str | None = None


@dataclass
class ScoreState:
    """What a lead keeps: the entries behind its score (oldest first) and its segment."""

    entries: list[ScoreEntry] = field(default_factory=list)
    segment: str | None = None
    fired: set[str] = field(default_factory=set)
    """Segments whose actions fired and have not re-armed: that takes a fall below the next
    lower threshold, so a swing around any line fires nothing twice."""


@dataclass(frozen=True)
class Contribution:
    """One line of a score explanation."""

    event_type: str
    at: datetime
    points: float
    current: float


@dataclass(frozen=True)
class SegmentChange:
    """A segment move; only an upward one fires the actions of `to_segment`."""

    from_segment: str | None
    to_segment: str | None
    upward: bool
    fire: bool = False
    """Run the actions of `to_segment`: an upward move into a segment that is armed."""


def score_at(state: ScoreState, rules: ScoringRules, at: datetime) -> float:
    """The score at `at`, rounded to 2 decimals."""
    return _round(_raw_score(state.entries, rules, at))


def explain(state: ScoreState, rules: ScoringRules, at: datetime) -> list[Contribution]:
    """The contributions behind the score, newest first, without those decayed below 0.01."""
    lines = []
    for entry in reversed(state.entries):
        current = _decayed(entry, rules, at)
        if not _faded(rules, current):
            lines.append(Contribution(entry.event_type, entry.at, entry.points, _round(current)))
    return lines


def add_points(
    state: ScoreState,
    rules: ScoringRules,
    event_type: str,
    at: datetime,
    event_id: str | None = None,
) -> SegmentChange | None:
    """Record the points for an event (if it has any), then re-evaluate the segment at `at`."""
    points = rules.points.get(event_type, 0)
    if points:
        entry = ScoreEntry(at, event_type, float(points), event_id)
        bisect.insort(state.entries, entry, key=_entry_time)
    return evaluate_segment(state, rules, at)


def evaluate_segment(state: ScoreState, rules: ScoringRules, at: datetime) -> SegmentChange | None:
    """Move `state.segment` as the score at `at` demands and return the move, if any."""
    ladder = _ladder(rules)
    current = _index(ladder, state.segment)
    score = score_at(state, rules, at)
    _rearm(state, ladder, score)
    target = _target(ladder, current, score)
    if target == current and (current is not None or state.segment is None):
        return None
    new = None if target is None else ladder[target][1]
    # a segment no longer in the rules counts as none at all: only a real segment is entered
    upward = target is not None and (current is None or target > current)
    fire = upward and new is not None and new not in state.fired
    if fire and new is not None:
        state.fired.add(new)
    change = SegmentChange(state.segment, new, upward, fire)
    state.segment = new
    return change


def _rearm(state: ScoreState, ladder: Sequence[tuple[float, str]], score: float) -> None:
    """A fired segment re-arms once the score is below the next lower threshold."""
    for index, (threshold, name) in enumerate(ladder):
        line = ladder[index - 1][0] if index > 0 else threshold
        if name in state.fired and score < line:
            state.fired.discard(name)


def next_segment_drop(state: ScoreState, rules: ScoringRules, at: datetime) -> datetime | None:
    """The first whole second from `at` on at which evaluating moves the segment down by decay.

    None without decay, without a segment, or when the decaying score never gets strictly
    below the drop line. Assumes the segment was evaluated at `at`.
    """
    ladder = _ladder(rules)
    current = _index(ladder, state.segment)
    if rules.half_life is None or current is None:
        return None
    line = _drop_line(ladder, current)
    if _drops(state, rules, at, line):
        return at
    start = max([at, *(entry.at for entry in state.entries)])
    score = _raw_score(state.entries, rules, start)
    boundary = _rounding_boundary(line)
    if score <= 0 or boundary <= 0:
        return None  # a score decays toward 0, so it never gets below a line at or under 0
    try:
        crossing = start + rules.half_life * max(0.0, math.log2(score / boundary))
    except OverflowError:
        return None
    return _settle(state, rules, crossing.replace(microsecond=0) + _SECOND, start, line)


def compact(state: ScoreState, rules: ScoringRules, at: datetime, keep: int = 200) -> None:
    """Fold faded entries, and the oldest beyond `keep`, into one entry; the score stays put."""
    if keep < 0:
        raise ValueError(f"keep must be at least 0, got {keep}")
    order = sorted(range(len(state.entries)), key=lambda i: state.entries[i].at)
    past = [i for i in order if state.entries[i].at <= at]
    faded = {i for i in past if _faded(rules, _decayed(state.entries[i], rules, at))}
    excess = len(state.entries) - len(faded) - keep
    overflow = [i for i in past if i not in faded][: max(0, excess)]
    gone = faded.union(overflow)
    folded = [state.entries[i] for i in gone]
    if not folded:
        return
    state.entries = [state.entries[i] for i in order if i not in gone]
    carry_at = max(entry.at for entry in folded)
    # one decay rate for all entries makes the folded sum exact at any later instant
    carry = math.fsum(_decayed(entry, rules, carry_at) for entry in folded)
    if carry:
        bisect.insort(
            state.entries, ScoreEntry(carry_at, FOLDED_EVENT_TYPE, carry), key=_entry_time
        )


def _raw_score(entries: Sequence[ScoreEntry], rules: ScoringRules, at: datetime) -> float:
    return math.fsum(_decayed(entry, rules, at) for entry in entries)


def _decayed(entry: ScoreEntry, rules: ScoringRules, at: datetime) -> float:
    if rules.half_life is None or entry.at >= at:
        # an entry stamped after `at` (an out-of-order event) counts as awarded, never grows
        return entry.points
    return entry.points * math.exp2(-((at - entry.at) / rules.half_life))


def _faded(rules: ScoringRules, current: float) -> bool:
    return rules.half_life is not None and abs(current) < _VISIBLE


def _round(value: float) -> float:
    return round(value, 2) + 0.0  # + 0.0 turns -0.0 into 0.0


def _entry_time(entry: ScoreEntry) -> datetime:
    return entry.at


def _ladder(rules: ScoringRules) -> list[tuple[float, str]]:
    return sorted((threshold, name) for name, threshold in rules.segments.items())


def _index(ladder: Sequence[tuple[float, str]], segment: str | None) -> int | None:
    names = [name for _, name in ladder]
    return names.index(segment) if segment in names else None


def _reached(ladder: Sequence[tuple[float, str]], score: float) -> int | None:
    below = [i for i, (threshold, _) in enumerate(ladder) if threshold <= score]
    return below[-1] if below else None


def _drop_line(ladder: Sequence[tuple[float, str]], current: int) -> float:
    return ladder[max(0, current - 1)][0]


def _target(ladder: Sequence[tuple[float, str]], current: int | None, score: float) -> int | None:
    """The segment index after a move: up to the highest reached, down past the drop line."""
    reached = _reached(ladder, score)
    if reached is not None and (current is None or reached > current):
        return reached
    if current is not None and score < _drop_line(ladder, current):
        return reached
    return current


def _drops(state: ScoreState, rules: ScoringRules, at: datetime, line: float) -> bool:
    return score_at(state, rules, at) < line


def _rounding_boundary(line: float) -> float:
    """The raw score under which the rounded score is below `line`."""
    cents = math.ceil(line * 100) + 1
    while cents / 100 >= line:  # the highest rounded score below the line, float-exact
        cents -= 1
    return (cents + 0.5) / 100


def _settle(
    state: ScoreState, rules: ScoringRules, guess: datetime, start: datetime, line: float
) -> datetime:
    # the closed form is exact up to float error; the score only falls after `start`,
    # so a step or two either way pins the first whole second below the line
    while not _drops(state, rules, guess, line):
        guess += _SECOND
    while guess - _SECOND > start and _drops(state, rules, guess - _SECOND, line):
        guess -= _SECOND
    return guess
