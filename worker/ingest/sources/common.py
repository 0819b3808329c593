"""What every webhook source shares: the refusal that names its fields, the delivery that is
deliberately ignored, reading JSON and form-encoded bodies, and comparing signatures."""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from worker.kit.errors import NurtureError
from worker.kit.fields import FieldError, summary


class Invalid(NurtureError):
    """Input the sender must fix: a 4xx whose body names the fields."""

    def __init__(self, fields: list[FieldError], status: int = 422) -> None:
        super().__init__(summary(fields))
        self.fields = fields
        self.status = status


def invalid(field: str, message: str, status: int = 422) -> Invalid:
    return Invalid([{"field": field, "message": message}], status)


@dataclass(frozen=True)
class Ignored:
    """A delivery that is understood and deliberately changes nothing (answered 200)."""

    reason: str


def same_digest(expected: bytes, given: str) -> bool:
    """Whether a signature header carries the expected digest."""
    # headers arrive decoded as latin-1; comparing bytes keeps compare_digest from raising on
    # a non-ASCII header, and keeps the comparison constant-time
    return hmac.compare_digest(expected, given.encode("latin-1", "replace"))


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def json_object(body: bytes) -> dict[str, Any]:
    """A JSON body that must be an object."""
    try:
        data = json.loads(body, parse_constant=_not_a_number)
    except (UnicodeDecodeError, ValueError) as exc:
        raise invalid("body", f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise invalid("body", "send a JSON object")
    return data


def _not_a_number(name: str) -> Any:
    # Python's json reads NaN and Infinity, which are not JSON and which PostgreSQL refuses
    raise ValueError(f"{name} is not a JSON number")


def form_pairs(body: bytes) -> list[tuple[str, str]]:
    """An `application/x-www-form-urlencoded` body, blank values kept (an empty form field)."""
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError) as exc:
        raise invalid("body", f"not a form-encoded body: {exc}") from exc
