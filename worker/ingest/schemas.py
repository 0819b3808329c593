"""The lead and event objects as forms, stores and files send them (SPEC §4), validated strictly:
a bad email, phone, time zone or event type is an error naming the field.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from worker.engine.state import Event, Lead
from worker.kit.clock import zone

EVENT_TYPE = re.compile(r"^[a-z0-9_.-]+$")


def _email(value: str) -> str:
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from exc


def _phone(value: str) -> str:
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(
            "not a phone number in international form: write it as E.164, like +4915112345678"
        ) from exc
    if not phonenumbers.is_valid_number(number):
        raise ValueError(f"{value!r} is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _timezone(value: str) -> str:
    if zone(value) is None:
        raise ValueError(f"{value[:64]!r} is not an IANA time zone (like Europe/Berlin)")
    return value


def _event_type(value: str) -> str:
    if not EVENT_TYPE.match(value):
        raise ValueError("event types use lower-case letters, digits, '_', '.' and '-'")
    return value


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("give a time zone offset, like 2026-11-22T10:00:00Z")
    return value.astimezone(UTC)


Email = Annotated[str, AfterValidator(_email)]
Phone = Annotated[str, AfterValidator(_phone)]
TimeZone = Annotated[str, AfterValidator(_timezone)]
EventTypeName = Annotated[
    str, AfterValidator(_event_type), Field(pattern=r"^[a-z0-9_.-]+$", max_length=200)
]
AwareDatetime = Annotated[datetime, AfterValidator(_aware)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # PostgreSQL text cannot hold NUL: refuse it here, naming the field, not with a 500
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("contains a NUL character")
        return value


class Consent(Strict):
    email: bool | None = None
    sms: bool | None = None
    whatsapp: bool | None = None


class LeadIn(Strict):
    email: Email | None = None
    phone: Phone | None = None
    external_id: str | None = Field(default=None, min_length=1, max_length=200)
    first_name: str | None = Field(default=None, max_length=200)
    last_name: str | None = Field(default=None, max_length=200)
    timezone: TimeZone | None = None
    consent: Consent | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _identity(self) -> LeadIn:
        if not (self.email or self.phone or self.external_id):
            raise ValueError("a lead needs an email, a phone or an external_id")
        return self

    def to_lead(self, lead_id: str) -> Lead:
        consent = self.consent.model_dump(exclude_none=True) if self.consent else {}
        return Lead(
            id=lead_id,
            email=self.email,
            phone=self.phone,
            external_id=self.external_id,
            first_name=self.first_name,
            last_name=self.last_name,
            timezone=self.timezone,
            attributes=dict(self.attributes),
            consent=consent,
        )


class EventIn(Strict):
    id: str | None = Field(default=None, min_length=1, max_length=200)
    type: EventTypeName
    occurred_at: AwareDatetime | None = None
    lead: LeadIn
    properties: dict[str, Any] = Field(default_factory=dict)

    def to_event(self, received_at: datetime) -> Event:
        return Event(self.type, self.occurred_at or received_at, dict(self.properties), self.id)
