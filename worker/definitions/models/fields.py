"""The field types shared by the sequence file models: durations, conditions, event types,
template names, time zones, spans of hours, the union tag finder, and `Strict`."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, PlainSerializer, PlainValidator

from worker.definitions.conditions import ConditionError, compile_condition
from worker.definitions.durations import Duration, parse_duration
from worker.kit.clock import zone

EVENT_TYPE = re.compile(r"^[a-z0-9_.-]+$")
TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_.-]+)*$")
HOURS = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]|24):[0-5]\d$")


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


def tag_of(value: Any, keys: tuple[str, ...], what: str) -> str | None:
    """The one key of `keys` a step or reaction has, which names its kind; None when it has
    none or several (the union then reports its own error)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(by_alias=True, exclude_none=True)
    if not isinstance(value, dict):
        return None
    present = [k for k in keys if k in value]
    return present[0] if len(present) == 1 else None
