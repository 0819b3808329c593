"""The sequence file format (SPEC §2) as pydantic models: sequences, scoring and policy files.

Steps and reactions are tagged unions whose tag is the channel or action key a marketer writes
(`email:`, `sms:`, `skip:` …), so an error names the field inside the right kind of step.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    PlainValidator,
    Tag,
    field_validator,
    model_validator,
)

from worker.definitions.conditions import ConditionError, compile_condition
from worker.definitions.durations import Duration, parse_duration
from worker.kit.clock import zone

EVENT_TYPE = re.compile(r"^[a-z0-9_.-]+$")
SEQUENCE_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
STEP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_.-]+)*$")
HOURS = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]|24):[0-5]\d$")
RATE = re.compile(r"^(\d+(\.\d+)?)/(s|m|h)$")
CHANNEL_KEYS = ("email", "sms", "whatsapp", "crm_task", "notify")
MESSAGE_CHANNELS = ("email", "sms", "whatsapp")


def _duration(value: Any) -> Duration:
    if isinstance(value, Duration):
        return value
    if not isinstance(value, str | int):
        raise ValueError(f"expected a duration like 30s, 15m, 1h, 2d, 1w, got {value!r}")
    return parse_duration(value)


DurationValue = Annotated[Duration, PlainValidator(_duration), PlainSerializer(str)]


def _condition(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError('expected a condition: a Jinja2 expression in quotes, like "lead.phone"')
    try:
        compile_condition(value)
    except ConditionError as exc:
        raise ValueError(str(exc)) from exc
    return value


Condition = Annotated[str, PlainValidator(_condition)]


def _event_type(value: Any) -> str:
    if not isinstance(value, str) or not EVENT_TYPE.match(value):
        raise ValueError(
            f"{value!r} is not an event type: use lower-case letters, digits, '_', '.' or '-'"
        )
    return value


EventType = Annotated[str, PlainValidator(_event_type)]


def _template_name(value: Any) -> str:
    if isinstance(value, str) and value.endswith((".j2", ".html", ".txt", ".sms", ".whatsapp")):
        bare = value.split(".", 1)[0]
        raise ValueError(f"write the template without its file ending: {bare}")
    if not isinstance(value, str) or not TEMPLATE_NAME.match(value) or ".." in value:
        raise ValueError(
            f"{value!r} is not a template name: write the path under templates/ without the "
            "ending, like trial/welcome"
        )
    return value


TemplateName = Annotated[str, PlainValidator(_template_name)]


def _timezone(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected an IANA time zone like Europe/Berlin, got {value!r}")
    if zone(value) is None:
        raise ValueError(f"{value[:64]!r} is not an IANA time zone (like Europe/Berlin)")
    return value


TimeZoneName = Annotated[str, PlainValidator(_timezone)]


def _schedule_timezone(value: Any) -> str:
    return "lead" if value == "lead" else _timezone(value)


ScheduleTimeZone = Annotated[str, PlainValidator(_schedule_timezone)]


def _hours(value: Any) -> str:
    if not isinstance(value, str) or not HOURS.match(value.replace(" ", "")):
        raise ValueError(f"{value!r} is not a span of hours: write HH:MM-HH:MM, like 09:00-18:00")
    return value.replace(" ", "")


Hours = Annotated[str, PlainValidator(_hours)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class Window(Strict):
    days: list[Weekday] | None = None
    hours: Hours | None = None
    skip_dates: list[date] = Field(default_factory=list)


class Tracking(Strict):
    opens: bool = True
    clicks: bool = True


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


def _tag_of(value: Any, keys: tuple[str, ...], what: str) -> str | None:
    if isinstance(value, BaseModel):
        value = value.model_dump(by_alias=True, exclude_none=True)
    if not isinstance(value, dict):
        return None
    present = [k for k in keys if k in value]
    return present[0] if len(present) == 1 else None


def _step_tag(value: Any) -> str | None:
    return _tag_of(value, (*CHANNEL_KEYS, "variants"), "step")


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


class OneOffSend(Strict):
    """`send:` under `on:` — a step that runs once per enrollment, `delay` after the event."""

    id: str
    delay: DurationValue = Duration()
    email: TemplateName | None = None
    sms: TemplateName | None = None
    whatsapp: WhatsappContent | None = None
    crm_task: CrmTask | None = None
    notify: Notify | None = None
    window: Window | None = None
    only_if: Condition | None = None
    skip_if: Condition | None = None

    @model_validator(mode="after")
    def _one_channel(self) -> OneOffSend:
        given = [c for c in CHANNEL_KEYS if getattr(self, c) is not None]
        if len(given) != 1:
            raise ValueError("send: needs exactly one of email, sms, whatsapp, crm_task or notify")
        if self.delay.negative:
            raise ValueError("delay: cannot be negative")
        return self


class PauseFor(Strict):
    for_: DurationValue | None = Field(default=None, alias="for")
    reason: str | None = None


class SendReaction(Strict):
    send: OneOffSend


class SkipReaction(Strict):
    skip: list[str]

    @field_validator("skip", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class ExitReaction(Strict):
    exit: Literal[True]


class PauseReaction(Strict):
    pause: PauseFor

    @field_validator("pause", mode="before")
    @classmethod
    def _bare(cls, value: Any) -> Any:
        return {} if value is True else value


class EnrollReaction(Strict):
    enroll: str


class CrmTaskReaction(Strict):
    crm_task: CrmTask


class NotifyReaction(Strict):
    notify: Notify


REACTION_KEYS = ("send", "skip", "exit", "pause", "enroll", "crm_task", "notify")


def _reaction_tag(value: Any) -> str | None:
    return _tag_of(value, REACTION_KEYS, "reaction")


Reaction = Annotated[
    Annotated[SendReaction, Tag("send")]
    | Annotated[SkipReaction, Tag("skip")]
    | Annotated[ExitReaction, Tag("exit")]
    | Annotated[PauseReaction, Tag("pause")]
    | Annotated[EnrollReaction, Tag("enroll")]
    | Annotated[CrmTaskReaction, Tag("crm_task")]
    | Annotated[NotifyReaction, Tag("notify")],
    Discriminator(
        _reaction_tag,
        custom_error_type="reaction_kind",
        custom_error_message=(
            "a reaction is one of send, skip, exit, pause, enroll, crm_task or notify"
        ),
    ),
]

SegmentAction = Annotated[
    Annotated[EnrollReaction, Tag("enroll")]
    | Annotated[CrmTaskReaction, Tag("crm_task")]
    | Annotated[NotifyReaction, Tag("notify")],
    Discriminator(
        lambda v: _tag_of(v, ("enroll", "crm_task", "notify"), "action"),
        custom_error_type="segment_action",
        custom_error_message="a segment action is one of enroll, crm_task or notify",
    ),
]


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


AnyStep = EmailStep | SmsStep | WhatsappStep | CrmTaskStep | NotifyStep | VariantsStep
