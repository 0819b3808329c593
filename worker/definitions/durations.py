"""Durations as marketers write them: `30s`, `15m`, `1h`, `2d`, `1w`, `1d12h`, `-24h`.

Days and weeks are calendar days in the schedule's time zone; hours, minutes and seconds are
elapsed time. A `Duration` keeps the two apart so the engine can apply each the right way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

_PATTERN = re.compile(
    r"^(?P<sign>[-+])?(?:(?P<w>\d+)w)?(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$"
)
EXAMPLES = "30s, 15m, 1h, 2d, 1w, 1d12h or -24h"


@dataclass(frozen=True, order=True)
class Duration:
    """A signed span: `days` on the calendar plus `seconds` of elapsed time (same sign)."""

    days: int = 0
    seconds: int = 0

    @property
    def negative(self) -> bool:
        return self.days < 0 or self.seconds < 0

    def approximate(self) -> timedelta:
        """The span as elapsed time, counting a calendar day as 24 hours."""
        return timedelta(days=self.days, seconds=self.seconds)

    def __neg__(self) -> Duration:
        return Duration(-self.days, -self.seconds)

    def __str__(self) -> str:
        if self.days == 0 and self.seconds == 0:
            return "0s"
        sign = "-" if self.negative else ""
        days, rest = abs(self.days), abs(self.seconds)
        parts = []
        if days:
            parts.append(f"{days // 7}w" if days % 7 == 0 else f"{days}d")
        hours, rest = divmod(rest, 3600)
        minutes, seconds = divmod(rest, 60)
        for value, unit in ((hours, "h"), (minutes, "m"), (seconds, "s")):
            if value:
                parts.append(f"{value}{unit}")
        return sign + "".join(parts)


def parse_duration(text: str | int) -> Duration:
    """Parse a duration; raise ValueError with a message a marketer can act on."""
    if isinstance(text, bool):
        raise ValueError(f"expected a duration like {EXAMPLES}, got {text!r}")
    if isinstance(text, int):
        if text == 0:
            return Duration()
        raise ValueError(f"a bare number is ambiguous: write {text}d, {text}h or {text}m")
    raw = str(text).strip().replace(" ", "")
    if raw.lstrip("+-").isdigit() and raw.lstrip("+-") != "0":
        raise ValueError(f"a bare number is ambiguous: write {raw}d, {raw}h or {raw}m")
    if raw.lstrip("+-") == "0":
        return Duration()
    match = _PATTERN.match(raw)
    if raw in ("", "-", "+") or match is None:
        raise ValueError(f"{text!r} is not a duration: write it like {EXAMPLES}")
    parts = {k: int(v) for k, v in match.groupdict().items() if k != "sign" and v is not None}
    if not parts:
        raise ValueError(f"{text!r} is not a duration: write it like {EXAMPLES}")
    days = parts.get("w", 0) * 7 + parts.get("d", 0)
    seconds = parts.get("h", 0) * 3600 + parts.get("m", 0) * 60 + parts.get("s", 0)
    if match.group("sign") == "-":
        return Duration(-days, -seconds)
    return Duration(days, seconds)
