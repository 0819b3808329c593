"""The one clock: where the shells read the time, and time zones by name that never raise."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Clock = Callable[[], datetime]
"""Where the shells read the time: `utcnow` in production, a fixed or moving one in tests."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def zone(name: str | None) -> ZoneInfo | None:
    """The IANA zone of that name, or None; never raises (the tz database reads files, and a
    long or odd name makes it fail with OSError rather than ZoneInfoNotFoundError)."""
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None
