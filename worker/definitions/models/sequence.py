"""A sequence file (SPEC §2): how leads enroll, the goal, the steps and the reactions to events."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from worker.definitions.models.fields import (
    Condition,
    DurationValue,
    EventType,
    ScheduleTimeZone,
    Strict,
)
from worker.definitions.models.reactions import Reaction
from worker.definitions.models.steps import Step, Tracking, Window

SEQUENCE_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class Enroll(Strict):
    on: list[EventType] = Field(default_factory=list)
    if_: Condition | None = Field(default=None, alias="if")
    key: Condition | None = None
    reenroll: Literal["never", "after_exit", "always"] = "never"

    @field_validator("on", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class Goal(Strict):
    event: EventType
    within: DurationValue


class Sequence(Strict):
    kind: Literal["sequence"] = "sequence"
    id: str | None = None
    name: str
    description: str | None = None
    enroll: Enroll | None = None
    exit_on: list[EventType] = Field(default_factory=list)
    goal: Goal | None = None
    anchor: Condition | None = None
    timezone: ScheduleTimeZone = "lead"
    window: Window | None = None
    tracking: Tracking = Tracking()
    steps: list[Step] = Field(min_length=1)
    on: dict[EventType, list[Reaction]] = Field(default_factory=dict)

    @field_validator("exit_on", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        if value is not None and not SEQUENCE_ID.match(value):
            raise ValueError(
                f"{value!r} is not a sequence id: lower-case letters, digits and '-', "
                "starting with a letter or digit"
            )
        return value
