"""What a sequence does when an event arrives (`on:`) and a scoring file on entering a segment
(`on_segment:`): tagged unions whose tag is the action key (`send:`, `skip:`, `exit:` …)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from worker.definitions.durations import Duration
from worker.definitions.models.fields import (
    Condition,
    DurationValue,
    Strict,
    TemplateName,
    tag_of,
)
from worker.definitions.models.steps import (
    CHANNEL_KEYS,
    CrmTask,
    Notify,
    WhatsappContent,
    Window,
)

REACTION_KEYS = ("send", "skip", "exit", "pause", "enroll", "crm_task", "notify")


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


def _reaction_tag(value: Any) -> str | None:
    return tag_of(value, REACTION_KEYS, "reaction")


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
        lambda v: tag_of(v, ("enroll", "crm_task", "notify"), "action"),
        custom_error_type="segment_action",
        custom_error_message="a segment action is one of enroll, crm_task or notify",
    ),
]
