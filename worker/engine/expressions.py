"""Sequence expressions (`if:`, `key:`, `anchor:`, `only_if:`, `skip_if:`) evaluated so that a
failing one never stops the engine."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from worker.definitions import conditions
from worker.engine import timing


def safe_eval(expression: str, names: dict[str, Any]) -> Any:
    try:
        return conditions.evaluate(expression, names)
    except conditions.ConditionError:
        return None


def safe_true(expression: str, names: dict[str, Any], *, on_error: bool = False) -> bool:
    """A condition that fails to evaluate counts as `on_error`: the side that sends nothing."""
    try:
        return conditions.is_true(expression, names)
    except conditions.ConditionError:
        return on_error


def as_datetime(value: Any) -> datetime | None:
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
