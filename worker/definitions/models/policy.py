"""The scoring file (points, decay, segments and their actions) and the policy file (caps,
quiet hours, rate limits) of SPEC §2."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator

from worker.definitions.models.fields import (
    DurationValue,
    EventType,
    Hours,
    Strict,
    TimeZoneName,
)
from worker.definitions.models.reactions import SegmentAction

RATE = re.compile(r"^(\d+(\.\d+)?)/(s|m|h)$")


class Decay(Strict):
    half_life: DurationValue


class Scoring(Strict):
    kind: Literal["scoring"]
    points: dict[EventType, float] = Field(default_factory=dict)
    decay: Decay | None = None
    segments: dict[str, float] = Field(default_factory=dict)
    on_segment: dict[str, list[SegmentAction]] = Field(default_factory=dict)


class Cap(Strict):
    per: DurationValue
    max: int = Field(ge=1)


class Caps(Strict):
    email: Cap | None = None
    sms: Cap | None = None
    whatsapp: Cap | None = None
    all: Cap | None = None


class QuietHours(Strict):
    sms: Hours = "21:00-08:00"
    whatsapp: Hours = "21:00-08:00"


def _rate(value: Any) -> str:
    if not isinstance(value, str) or not RATE.match(value.replace(" ", "")):
        raise ValueError(f"{value!r} is not a rate: write it like 10/s, 600/m or 1000/h")
    return value.replace(" ", "")


Rate = Annotated[str, PlainValidator(_rate)]


class RateLimits(Strict):
    email: Rate | None = None
    sms: Rate | None = None
    whatsapp: Rate | None = None
    crm: Rate | None = None


class Policy(Strict):
    kind: Literal["policy"]
    caps: Caps = Caps()
    quiet_hours: QuietHours = QuietHours()
    rate_limits: RateLimits = RateLimits()
    inactive_after: DurationValue | None = None
    default_timezone: TimeZoneName | None = None


def rate_per_second(rate: str) -> float:
    """`10/s` → 10.0, `600/m` → 10.0."""
    match = RATE.match(rate)
    if match is None:
        raise ValueError(rate)
    per = {"s": 1, "m": 60, "h": 3600}[match.group(3)]
    return float(match.group(1)) / per
