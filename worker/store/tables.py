"""The database is the truth: leads, events, enrollments, step runs, messages, the timeline,
the CRM outbox and the operator switches. Every pending step is a row with `due_at`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every database (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime stored")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _time(*, index: bool = False, nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), index=index, nullable=nullable))


def _json(default: Any) -> Any:
    return Field(default_factory=default, sa_column=Column(JSON, nullable=False))


def _json_or_null() -> Any:
    return Field(default=None, sa_column=Column(JSON, nullable=True))


SEARCH_NAME = String(410).with_variant(String(410, collation="C"), "postgresql")
"""Case-folded names, compared byte by byte on both databases: a prefix is an index range."""


class LeadRow(SQLModel, table=True):
    __tablename__ = "leads"
    __table_args__ = (
        Index("ix_leads_search_name", "search_name"),
        Index("ix_leads_search_last", "search_last"),
    )

    id: str = Field(primary_key=True, max_length=32)
    email: str | None = Field(default=None, sa_column=Column(String(320), unique=True))
    phone: str | None = Field(default=None, sa_column=Column(String(32), unique=True))
    external_id: str | None = Field(default=None, sa_column=Column(String(200), unique=True))
    first_name: str | None = None
    last_name: str | None = None
    timezone: str | None = None
    attributes: dict[str, Any] = _json(dict)
    consent: dict[str, Any] = _json(dict)
    """channel → {granted, at, source}."""
    suppressions: dict[str, str] = _json(dict)
    score: dict[str, Any] = _json(dict)
    """entries, segment and fired segments (worker.engine.scoring.ScoreState)."""
    segment: str | None = None
    history: list[str] = _json(list)
    last_activity_at: datetime | None = _time()
    inactive_notified: bool = False
    last_inbound_whatsapp_at: datetime | None = _time()
    pause: dict[str, Any] | None = _json_or_null()
    wake_at: datetime | None = _time(index=True)
    """When time alone next changes this lead (a decaying score, a quiet spell)."""
    erased: bool = False
    created_at: datetime = _time(nullable=False)
    updated_at: datetime = _time(nullable=False)
    crm_state: dict[str, Any] | None = _json_or_null()
    """The CRM contact properties as last written to the CRM outbox (worker/crm/changes.py)."""
    search_name: str | None = Field(default=None, sa_column=Column(SEARCH_NAME, nullable=True))
    """"first last", case-folded (worker/store/leads.py `search_names`): the console's search
    finds a prefix of the first name or of the whole name in its index."""
    search_last: str | None = Field(default=None, sa_column=Column(SEARCH_NAME, nullable=True))
    """The last name, case-folded, for a search by last name."""


class EventRow(SQLModel, table=True):
    __tablename__ = "events"

    id: str = Field(primary_key=True, max_length=32)
    idempotency_key: str | None = Field(default=None, sa_column=Column(String(200), unique=True))
    lead_id: str = Field(index=True, max_length=32)
    type: str = Field(max_length=200)
    occurred_at: datetime = _time(nullable=False)
    received_at: datetime = _time(nullable=False)
    properties: dict[str, Any] = _json(dict)
    source: str = Field(default="api", max_length=40)


class EnrollmentRow(SQLModel, table=True):
    __tablename__ = "enrollments"
    __table_args__ = (Index("ix_enrollments_lead_sequence", "lead_id", "sequence_id", "key"),)

    id: str = Field(primary_key=True, max_length=32)
    lead_id: str = Field(max_length=32)
    sequence_id: str = Field(index=True, max_length=100)
    key: str | None = Field(default=None, max_length=500)
    status: str = Field(default="active", max_length=20)
    enrolled_at: datetime = _time(nullable=False)
    anchor_at: datetime = _time(nullable=False)
    anchored: bool = False
    version: str = Field(max_length=40)
    event: dict[str, Any] | None = _json_or_null()
    events_seen: list[str] = _json(list)
    pause: dict[str, Any] | None = _json_or_null()
    shift_seconds: float = 0
    exit_reason: str | None = None
    ended_at: datetime | None = _time()


class StepRunRow(SQLModel, table=True):
    __tablename__ = "step_runs"
    __table_args__ = (
        # what the dispatcher scans: only waiting rows, in due order
        Index(
            "ix_step_runs_due",
            "due_at",
            postgresql_where=text("status = 'pending' AND due_at IS NOT NULL"),
            sqlite_where=text("status = 'pending' AND due_at IS NOT NULL"),
        ),
        Index(
            "ix_step_runs_leased",
            "lease_until",
            postgresql_where=text("status IN ('queued', 'claimed', 'sending')"),
            sqlite_where=text("status IN ('queued', 'claimed', 'sending')"),
        ),
        # the texts left in doubt, which the confirmer asks Twilio about (store/unknown.py)
        Index(
            "ix_step_runs_unknown",
            "claimed_at",
            postgresql_where=text("status = 'unknown'"),
            sqlite_where=text("status = 'unknown'"),
        ),
    )

    id: str = Field(primary_key=True, max_length=32)
    lead_id: str = Field(index=True, max_length=32)
    enrollment_id: str | None = Field(default=None, index=True, max_length=32)
    sequence_id: str = Field(max_length=100)
    step_id: str = Field(max_length=200)
    kind: str = Field(default="step", max_length=10)
    position: int = 0
    status: str = Field(default="pending", max_length=20)
    """pending → queued (leased to a task) → claimed (checks passed) → sending (handed to the
    provider) → sent | skipped | failed | unknown."""
    due_at: datetime | None = _time()
    nominal_at: datetime | None = _time()
    anchored: bool = False
    channel: str | None = Field(default=None, max_length=20)
    variant: int | None = None
    reason: str | None = Field(default=None, max_length=200)
    hold: str | None = Field(default=None, max_length=40)
    finished_at: datetime | None = _time()
    sent_at: datetime | None = _time()
    version: str | None = Field(default=None, max_length=40)
    git_commit: str | None = Field(default=None, max_length=40)
    attempts: int = 0
    event: dict[str, Any] | None = _json_or_null()
    lease_until: datetime | None = _time()
    claimed_at: datetime | None = _time()
    provider_message_id: str | None = Field(default=None, max_length=200)


class MessageRow(SQLModel, table=True):
    __tablename__ = "messages"
    __table_args__ = (
        # what the pruning of old copies scans: only the messages that still keep one
        Index(
            "ix_messages_copy_kept",
            "sent_at",
            postgresql_where=text("sent_copy IS NOT NULL"),
            sqlite_where=text("sent_copy IS NOT NULL"),
        ),
    )

    id: str = Field(primary_key=True, max_length=32)
    step_run_id: str = Field(index=True, max_length=32)
    lead_id: str = Field(index=True, max_length=32)
    channel: str = Field(max_length=20)
    to: str | None = Field(default=None, max_length=320)
    subject: str | None = None
    body: str | None = Field(default=None, sa_column=Column(Text))
    provider_message_id: str | None = Field(default=None, index=True, max_length=200)
    status: str = Field(default="accepted", max_length=20)
    sent_at: datetime = _time(nullable=False)
    updated_at: datetime = _time(nullable=False)
    segments: int | None = None
    """SMS parts the provider counted (Twilio's num_segments); None when not known."""
    sent_copy: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    """An email as sent: zlib-compressed JSON {subject, text, html} (worker/store/messages.py),
    dropped after `copy_retention_days` and when the person is erased. (Not `copy`: that name
    would shadow pydantic's `BaseModel.copy`.)"""


class TimelineRow(SQLModel, table=True):
    __tablename__ = "timeline"

    id: int | None = Field(default=None, primary_key=True)
    lead_id: str = Field(index=True, max_length=32)
    at: datetime = _time(nullable=False)
    sequence_id: str | None = Field(default=None, max_length=100)
    step_id: str | None = Field(default=None, max_length=200)
    enrollment_id: str | None = Field(default=None, max_length=32)
    action: str = Field(max_length=20)
    channel: str | None = Field(default=None, max_length=20)
    reason: str | None = Field(default=None, max_length=200)
    subject: str | None = None


class CrmChangeRow(SQLModel, table=True):
    """Changes to tell the CRM, written with the change itself and pushed later in order."""

    __tablename__ = "crm_outbox"
    __table_args__ = (
        # what the pusher scans: only changes still to push, per contact in order
        Index(
            "ix_crm_outbox_pending",
            "lead_id",
            "id",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index(
            "ix_crm_outbox_queue",
            "id",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    lead_id: str = Field(index=True, max_length=32)
    kind: str = Field(max_length=40)
    payload: dict[str, Any] = _json(dict)
    created_at: datetime = _time(nullable=False)
    pushed_at: datetime | None = _time()
    attempts: int = 0
    status: str = Field(default="pending", max_length=20)
    """pending → pushed | failed (the CRM refused it: recorded, not retried)."""
    next_attempt_at: datetime | None = _time()
    lease_until: datetime | None = _time()
    delivery_id: str | None = Field(default=None, max_length=80)
    """Set on the first attempt; a retry sends the same changes under the same id."""
    last_error: str | None = Field(default=None, sa_column=Column(Text))


class EnrollmentRequestRow(SQLModel, table=True):
    """The answer to a manual enrollment (`POST /v1/enrollments`) kept under the caller's
    Idempotency-Key: a repeat answers the same and writes nothing."""

    __tablename__ = "enrollment_requests"

    idempotency_key: str = Field(primary_key=True, max_length=200)
    request_hash: str = Field(max_length=64)
    """sha256 of the request: the same key with another request is refused."""
    lead_id: str = Field(index=True, max_length=32)
    status_code: int
    answer: dict[str, Any] = _json(dict)
    created_at: datetime = _time(nullable=False)


class SwitchRow(SQLModel, table=True):
    """Operator holds: `sends` (the incident switch), `sequence:<id>` paused or retired."""

    __tablename__ = "switches"

    name: str = Field(primary_key=True, max_length=140)
    value: str = Field(max_length=40)
    changed_at: datetime = _time(nullable=False)
    changed_by: str | None = None


class SequenceVersionRow(SQLModel, table=True):
    __tablename__ = "sequence_versions"

    sequence_id: str = Field(primary_key=True, max_length=100)
    version: str = Field(max_length=40)
    git_commit: str | None = Field(default=None, max_length=40)
    loaded_at: datetime = _time(nullable=False)
    present: bool = True


class InboxPositionRow(SQLModel, table=True):
    """Where the mailbox poller stopped, per mailbox and folder (docs/inbox.md)."""

    __tablename__ = "inbox_positions"

    mailbox: str = Field(primary_key=True, max_length=400)
    uidvalidity: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_uid: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = _time(nullable=False)


class InboxMessageRow(SQLModel, table=True):
    """One message read from the mailbox and what it was; its unique key is the claim that
    makes two pollers at once act on it once."""

    __tablename__ = "inbox_messages"
    __table_args__ = (
        UniqueConstraint("mailbox", "uidvalidity", "uid", name="uq_inbox_messages_uid"),
    )

    id: int | None = Field(default=None, primary_key=True)
    mailbox: str = Field(max_length=400)
    uidvalidity: int = Field(sa_column=Column(BigInteger, nullable=False))
    uid: int = Field(sa_column=Column(BigInteger, nullable=False))
    message_id: str | None = Field(default=None, max_length=500)
    kind: str = Field(max_length=20)
    """reply | auto_reply | bounce | delayed | complaint | unmatched | unparseable"""
    matched_by: str | None = Field(default=None, max_length=20)
    lead_id: str | None = Field(default=None, index=True, max_length=32)
    step_run_id: str | None = Field(default=None, max_length=32)
    event_id: str | None = Field(default=None, max_length=32)
    detail: str | None = Field(default=None, max_length=200)
    received_at: datetime = _time(nullable=False)


class UserRow(SQLModel, table=True):
    """A person who signs in to the console (worker/accounts/): a role and an argon2 hash."""

    __tablename__ = "users"

    name: str = Field(primary_key=True, max_length=64)
    role: str = Field(max_length=20)
    password_hash: str = Field(max_length=200)
    must_change_password: bool = False
    created_at: datetime = _time(nullable=False)
    password_changed_at: datetime = _time(nullable=False)
    session_version: int = 1
    """Part of every session cookie: a new password, a new role or removal ends old ones."""


class SignInFailureRow(SQLModel, table=True):
    """Failed sign-ins per name (`name:ana`) or client address (`ip:203.0.113.9`), kept in the
    database so that every API process counts the same (worker/accounts/throttle.py)."""

    __tablename__ = "sign_in_failures"

    key: str = Field(primary_key=True, max_length=120)
    count: int = 0
    first_at: datetime = _time(nullable=False)
    locked_until: datetime | None = _time()


class ActionRow(SQLModel, table=True):
    """Who did what, when and why (worker/accounts/audit.py): every state-changing action of
    support, operators and the CRM, written in the transaction of the change itself."""

    __tablename__ = "actions"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _time(nullable=False)
    actor: str = Field(max_length=80)
    """`user:<name>` (the console), `api` (a bearer token), `cli`, `crm`."""
    action: str = Field(max_length=40)
    target: str | None = Field(default=None, max_length=200)
    reason: str | None = Field(default=None, sa_column=Column(Text))
    lead_id: str | None = Field(default=None, index=True, max_length=32)
    details: dict[str, Any] | None = _json_or_null()
