"""The steps of a sequence: a tagged union whose tag is the channel key a marketer writes
(`email:`, `sms:` …), with the timing, sending window and content every kind shares."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Discriminator, Field, Tag, field_validator, model_validator

from worker.definitions.models.fields import (
    Condition,
    DurationValue,
    Hours,
    Strict,
    TemplateName,
    tag_of,
)

STEP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
CHANNEL_KEYS = ("email", "sms", "whatsapp", "crm_task", "notify")
MESSAGE_CHANNELS = ("email", "sms", "whatsapp")

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class Window(Strict):
    days: list[Weekday] | None = None
    hours: Hours | None = None
    skip_dates: list[date] = Field(default_factory=list)


class Tracking(Strict):
    opens: bool = True
    clicks: bool = True


class CrmTask(Strict):
    subject: str
    body: str | None = None
    priority: Literal["low", "medium", "high"] = "medium"
    due: DurationValue | None = None
    type: Literal["call", "email", "todo"] = "todo"


class Notify(Strict):
    email: str
    template: TemplateName

    @field_validator("email")
    @classmethod
    def _address(cls, value: str) -> str:
        if "@" not in value or value.startswith("@") or value.endswith("@"):
            raise ValueError(f"{value!r} is not an email address")
        return value


class WhatsappTemplate(Strict):
    content_sid: str
    variables: dict[str, str] = Field(default_factory=dict)

    @field_validator("content_sid")
    @classmethod
    def _sid(cls, value: str) -> str:
        if not re.match(r"^HX[0-9a-fA-F]{32}$", value):
            raise ValueError(
                f"{value!r} is not a Twilio Content SID: it starts with HX and has 32 hex digits"
            )
        return value


WhatsappContent = TemplateName | WhatsappTemplate


def _day(value: Any) -> Any:
    if isinstance(value, str) and not value.strip().isdigit():
        raise ValueError(
            f"day: takes a whole number (day: 3 is Day 3); for a span write at: {value} "
            f"or after: {value}"
        )
    return value


class Timing(Strict):
    """Exactly one of day / at / after; checked by the step models."""

    day: Annotated[int | None, BeforeValidator(_day)] = Field(default=None, ge=1)
    at: DurationValue | None = None
    after: DurationValue | None = None
    window: Window | None = None
    only_if: Condition | None = None
    skip_if: Condition | None = None

    @model_validator(mode="after")
    def _one_timing(self) -> Timing:
        given = [name for name in ("day", "at", "after") if getattr(self, name) is not None]
        if len(given) != 1:
            detail = "none" if not given else " and ".join(given)
            raise ValueError(
                f"a step needs exactly one of day, at or after (it has {detail}): "
                "day: 3 for Day 3, at: 2h from the anchor, after: 1d from the previous step"
            )
        if self.after is not None and self.after.negative:
            raise ValueError("after: cannot be negative; use at: with a negative offset")
        return self


class EmailStep(Timing):
    id: str
    email: TemplateName


class SmsStep(Timing):
    id: str
    sms: TemplateName


class WhatsappStep(Timing):
    id: str
    whatsapp: WhatsappContent


class CrmTaskStep(Timing):
    id: str
    crm_task: CrmTask


class NotifyStep(Timing):
    id: str
    notify: Notify


class Variant(Strict):
    email: TemplateName | None = None
    sms: TemplateName | None = None
    whatsapp: WhatsappContent | None = None
    weight: float = Field(default=1, gt=0)

    @model_validator(mode="after")
    def _one_channel(self) -> Variant:
        given = [c for c in MESSAGE_CHANNELS if getattr(self, c) is not None]
        if len(given) != 1:
            raise ValueError("a variant needs exactly one of email, sms or whatsapp")
        return self

    @property
    def channel(self) -> str:
        return next(c for c in MESSAGE_CHANNELS if getattr(self, c) is not None)


class VariantsStep(Timing):
    id: str
    variants: list[Variant] = Field(min_length=2)


def _step_tag(value: Any) -> str | None:
    return tag_of(value, (*CHANNEL_KEYS, "variants"), "step")


Step = Annotated[
    Annotated[EmailStep, Tag("email")]
    | Annotated[SmsStep, Tag("sms")]
    | Annotated[WhatsappStep, Tag("whatsapp")]
    | Annotated[CrmTaskStep, Tag("crm_task")]
    | Annotated[NotifyStep, Tag("notify")]
    | Annotated[VariantsStep, Tag("variants")],
    Discriminator(
        _step_tag,
        custom_error_type="step_channel",
        custom_error_message=(
            "a step needs exactly one of email, sms, whatsapp, crm_task, notify or variants"
        ),
    ),
]

AnyStep = EmailStep | SmsStep | WhatsappStep | CrmTaskStep | NotifyStep | VariantsStep
