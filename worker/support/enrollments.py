"""Enrolling a lead by hand (`POST /v1/enrollments` and its batch): the request checked against
the sequence (its key, its anchor, its re-entry rule) under the lead's lock, and the answer kept
under the caller's Idempotency-Key, so a repeat answers the same and writes nothing.

Support's hand overrides the sequence's `enroll.if` (they mean it), never its `reenroll:` rule.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.exc import DataError, IntegrityError
from sqlmodel import Session

from worker.accounts.audit import record_action
from worker.definitions.catalog import SequenceDef
from worker.engine.core import Engine
from worker.engine.expressions import as_datetime, safe_eval
from worker.engine.lifecycle import exit_enrollment
from worker.engine.state import Enrollment, Event, LeadWorld, Outcome
from worker.ingest.intake import atomically
from worker.ingest.repository import find_or_create
from worker.ingest.schemas import LeadIn
from worker.kit.errors import Conflict, InvalidInput, NotFound, NurtureError
from worker.runtime.process import Runtime
from worker.store.tables import EnrollmentRequestRow
from worker.store.worlds import Loaded
from worker.world.unit import act_locked

MANUAL_EVENT = "manual_enrollment"
"""The type of the event a manual enrollment carries: `event.properties` are the request's."""
KEY_LENGTH = 500
"""What `enrollments.key` holds."""
_PROPERTY = re.compile(r"^\s*event\.properties\.([A-Za-z_][A-Za-z0-9_]*)\s*$")


@dataclass(frozen=True)
class ManualEnrollment:
    lead: LeadIn
    sequence: str
    properties: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None

    def fingerprint(self) -> str:
        """What the request asks, hashed: one Idempotency-Key is one request."""
        asked = {
            "lead": self.lead.model_dump(mode="json", exclude_none=True),
            "sequence": self.sequence,
            "properties": self.properties,
        }
        canonical = json.dumps(asked, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Answered:
    """The answer to a manual enrollment: 201 and its body, or the one kept for its key."""

    status_code: int
    body: dict[str, Any]
    replayed: bool = False


@dataclass(frozen=True)
class Refused:
    """A batch item that was not enrolled: the code and message a single request would get."""

    code: str
    message: str
    fields: list[dict[str, str]] | None = None


class InvalidField(InvalidInput):
    """Input the sequence cannot enroll with, naming the field to fix."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.field = name
        self.detail = message


def enroll_by_hand(
    runtime: Runtime, request: ManualEnrollment, *, actor: str = "api", reason: str | None = None
) -> Answered:
    """Enroll the lead (created when new) in one transaction, recorded in the audit log as
    `actor`'s. Raises NotFound for an unknown sequence, InvalidField for properties the
    sequence needs, Conflict for its re-entry rule; each writes nothing. A repeated
    Idempotency-Key answers the first answer."""
    definition = runtime.catalog.sequence(request.sequence)
    if definition is None:
        raise NotFound(f"no sequence {request.sequence}")
    return atomically(
        runtime,
        lambda session, now: _enroll(runtime, session, definition, request, now, actor, reason),
    )


def enroll_each(
    runtime: Runtime, requests: Sequence[ManualEnrollment], *, actor: str = "api"
) -> list[Answered | Refused]:
    """`enroll_by_hand` for each request in a transaction of its own: one refused costs only
    its own result."""
    found: list[Answered | Refused] = []
    for request in requests:
        try:
            found.append(enroll_by_hand(runtime, request, actor=actor))
        except InvalidField as exc:
            fields = [{"field": exc.field, "message": exc.detail}]
            found.append(Refused("invalid", str(exc), fields))
        except NotFound as exc:
            found.append(Refused("not_found", str(exc)))
        except Conflict as exc:
            found.append(Refused("conflict", str(exc)))
        except NurtureError as exc:
            found.append(Refused("invalid", str(exc)))
        except (IntegrityError, DataError) as exc:
            found.append(
                Refused("not_stored", f"the database refused it: {type(exc.orig).__name__}")
            )
    return found


def _enroll(
    runtime: Runtime,
    session: Session,
    definition: SequenceDef,
    request: ManualEnrollment,
    now: datetime,
    actor: str,
    reason: str | None,
) -> Answered:
    key = request.idempotency_key
    fingerprint = request.fingerprint()
    if key is not None:
        kept = session.get(EnrollmentRequestRow, key)
        if kept is not None:
            if kept.request_hash != fingerprint:
                raise InvalidField(
                    "Idempotency-Key",
                    "this key was used for another request (another lead, sequence or "
                    "properties): use a new key for a new request",
                )
            return Answered(kept.status_code, kept.answer, replayed=True)
    lead_row = find_or_create(session, request.lead, now, "api")
    session.flush()
    claim = None
    if key is not None:
        # the key is claimed before the lead's lock: a concurrent request with the same key
        # waits on it, fails on the primary key once this one commits, and then replays it
        claim = EnrollmentRequestRow(
            idempotency_key=key,
            request_hash=fingerprint,
            lead_id=lead_row.id,
            status_code=201,
            answer={},
            created_at=now,
        )
        session.add(claim)
        session.flush()
    enrolled: list[Enrollment] = []

    def act(engine: Engine, loaded: Loaded, at: datetime) -> Outcome:
        event = Event(MANUAL_EVENT, at, dict(request.properties))
        outcome = Outcome()
        enrolled.append(_enroll_checked(engine, loaded.world, definition, event, at, outcome))
        return outcome

    outcome = act_locked(session, runtime.engine, lead_row.id, act, now)
    body = answer(lead_row.id, enrolled[0], outcome)
    details = {"key": enrolled[0].key} if enrolled[0].key is not None else None
    record_action(session, actor=actor, action="enroll", reason=reason, lead_id=lead_row.id,
                  target=definition.id, details=details, now=now)  # fmt: skip
    if claim is not None:
        claim.answer = body
    return Answered(201, body)


def _enroll_checked(
    engine: Engine,
    world: LeadWorld,
    definition: SequenceDef,
    event: Event,
    now: datetime,
    outcome: Outcome,
) -> Enrollment:
    names = engine.names(world, None, event, now)
    key = _key(definition, names)
    _check_anchor(definition, names)
    for running in _reentry(world, definition, key):
        exit_enrollment(running, "reenrolled", now, outcome)
    found = engine.enroll(world, definition, event, now, outcome=outcome, manual=True)
    if found is None:  # the checks above leave the engine no reason to refuse
        raise Conflict(f"{_who(world)} could not be enrolled in {definition.id}")
    return found


def _key(definition: SequenceDef, names: dict[str, Any]) -> str | None:
    """The enrollment's key, which a keyed sequence needs from the request's properties."""
    rule = definition.model.enroll
    if rule is None or rule.key is None:
        return None
    value = safe_eval(rule.key, names)
    name = _field_of(rule.key)
    if value in (None, ""):
        raise InvalidField(
            name,
            f"{definition.id} keeps one enrollment per `{rule.key}`: give it in the "
            "properties (one enrollment per value, like a cart token)",
        )
    key = str(value)
    if len(key) > KEY_LENGTH or "\x00" in key:
        raise InvalidField(name, f"the key must be text of at most {KEY_LENGTH} characters")
    return key


def _check_anchor(definition: SequenceDef, names: dict[str, Any]) -> None:
    anchor = definition.model.anchor
    if anchor is not None and as_datetime(safe_eval(anchor, names)) is None:
        raise InvalidField(
            _field_of(anchor),
            f"{definition.id} times its steps from `{anchor}`: give it as an ISO 8601 "
            "datetime with an offset, like 2026-03-10T16:00:00Z",
        )


def _reentry(world: LeadWorld, definition: SequenceDef, key: str | None) -> list[Enrollment]:
    """The running enrollments `reenroll: always` ends; a Conflict naming the rule when the
    sequence's `reenroll:` refuses another enrollment of the lead (for this key)."""
    rule = definition.model.enroll
    reenroll = rule.reenroll if rule is not None else "never"
    previous = [e for e in world.enrollments if e.sequence_id == definition.id and e.key == key]
    running = [e for e in previous if e.active]
    where = definition.id + (f" for key {key}" if key is not None else "")
    says = f"{definition.id} says reenroll: {reenroll}"
    if running and reenroll != "always":
        raise Conflict(f"{_who(world)} is already enrolled in {where} and {says}")
    if previous and not running and reenroll == "never":
        raise Conflict(f"{_who(world)} was enrolled in {where} before and {says}")
    return running


def _field_of(expression: str) -> str:
    """`event.properties.cart_token` → `properties.cart_token`; any other expression names
    the whole `properties`."""
    match = _PROPERTY.match(expression)
    return f"properties.{match.group(1)}" if match else "properties"


def _who(world: LeadWorld) -> str:
    lead = world.lead
    return lead.email or lead.phone or lead.external_id or f"lead {lead.id}"


def answer(lead_id: str, enrollment: Enrollment, outcome: Outcome) -> dict[str, Any]:
    """The body of a 201: the enrollment and what it did."""
    return {
        "lead_id": lead_id,
        "enrollment": {
            "id": enrollment.id,
            "sequence": enrollment.sequence_id,
            "key": enrollment.key,
            "status": enrollment.status,
            "enrolled_at": enrollment.enrolled_at.isoformat(),
            "anchor_at": enrollment.anchor_at.isoformat(),
        },
        "timeline": [
            {
                "at": e.at.isoformat(),
                "sequence": e.sequence,
                "step": e.step,
                "action": e.action,
                "reason": e.reason,
            }
            for e in outcome.entries
        ],
    }
