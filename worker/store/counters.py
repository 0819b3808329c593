"""Outcomes counted as they happen: each write that changes a step run, an enrollment or a
message adds its outcomes to the session's tally, and the tally goes in as ONE multi-row INSERT
of small delta rows at the end of the write-back (`flush`), in the same transaction. No row is
updated, so no send waits on a hot row; a read sums the deltas (worker/store/counter_reads.py).

What is counted when (docs/stats.md): `scheduled` when a step run is written first; `sent`,
`skipped` (by reason) and `failed` (by reason) when a run turns so; `delivered` when a sent
run's message counts as delivered (an email when accepted, until it bounces; a text on its
receipt); `entered`, `completed`, `exited` for enrollments; opens, clicks, replies,
unsubscribes and conversions once per message or enrollment, as their events are stored
(worker/world/counting.py). The hour is the outcome's own time where the row keeps one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from worker.store.counter_rows import ENROLLMENT, NO_VARIANT, CounterMarkRow, CounterRow
from worker.store.tables import MessageRow, StepRunRow

FINISHED = ("sent", "skipped", "failed")
"""Run statuses counted (the others are read live: waiting, in flight, in doubt)."""
TEXT_CHANNELS = ("sms", "whatsapp")
DELIVERED_TEXT = ("delivered", "read")
NOT_DELIVERED_EMAIL = ("bounced", "failed", "undelivered", "complained")
ENDED = ("completed", "exited")
TALLY = "nurture.counter_tally"


@dataclass(frozen=True)
class RunKey:
    """Which funnel line a step run counts on."""

    sequence_id: str
    version: str
    step_id: str
    variant: int

    @staticmethod
    def of(sequence_id: str, version: str | None, step_id: str, variant: int | None) -> RunKey:
        return RunKey(
            sequence_id, version or "", step_id, NO_VARIANT if variant is None else variant
        )


@dataclass
class Tally:
    """The outcomes a transaction has counted so far, and the runs it turned `sent` (their
    deliveries and conversions are looked up set-based at the flush)."""

    deltas: Counter[tuple[RunKey, datetime, str, str]] = field(default_factory=Counter)
    sent: dict[str, tuple[RunKey, str | None, datetime]] = field(default_factory=dict)
    """step run id → (its key, its enrollment, when it was sent)."""


def hour_of(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def tally(session: Session) -> Tally:
    found: Tally | None = session.info.get(TALLY)
    if found is None:
        found = session.info[TALLY] = Tally()
    return found


def add(
    session: Session, key: RunKey, at: datetime, outcome: str, reason: str = "", n: int = 1
) -> None:
    tally(session).deltas[(key, hour_of(at), outcome, (reason or "")[:200])] += n


def delivered(channel: str | None, status: str | None) -> bool:
    """An SMS or WhatsApp needs its delivery receipt; an email accepted by the relay counts
    until it bounces."""
    if channel in TEXT_CHANNELS:
        return status in DELIVERED_TEXT
    return status not in NOT_DELIVERED_EMAIL


# -- transitions ------------------------------------------------------------------------------


def run_written(
    session: Session,
    keys: dict[str, Any],
    old: StepRunRow | None,
    values: dict[str, Any],
    now: datetime,
) -> None:
    """A step run written back: `keys` its fixed columns (id, sequence, step, enrollment),
    `old` the row as it was (None for a new one), `values` what it is now."""
    if keys.get("enrollment_id") is None:
        return  # a scoring action belongs to no sequence's funnel
    key = RunKey.of(keys["sequence_id"], values.get("version"), keys["step_id"],
                    values.get("variant"))  # fmt: skip
    status, reason = values["status"], values.get("reason") or ""
    if old is None:
        add(session, key, now, "scheduled")
    elif old.status == status and (old.reason or "") == reason:
        return
    if old is not None and old.status in FINISHED:
        add(session, key, _finished_at(old.status, old.sent_at, old.finished_at, now),
            old.status, _reason(old.status, old.reason), -1)  # fmt: skip
    if status in FINISHED:
        at = _finished_at(status, values.get("sent_at"), values.get("finished_at"), now)
        add(session, key, at, status, _reason(status, reason))
        if status == "sent":
            tally(session).sent[keys["id"]] = (key, keys["enrollment_id"], at)


def _finished_at(
    status: str, sent_at: datetime | None, finished_at: datetime | None, now: datetime
) -> datetime:
    if status == "sent":
        return sent_at or finished_at or now
    return finished_at or now


def _reason(status: str, reason: str | None) -> str:
    return "" if status == "sent" else (reason or "")


def enrollment_written(
    session: Session, keys: dict[str, Any], old_status: str | None, values: dict[str, Any]
) -> None:
    """An enrollment written back: entered when new, completed or exited when it ends."""
    key = RunKey.of(keys["sequence_id"], values.get("version"), ENROLLMENT, None)
    status = values["status"]
    if old_status is None:
        add(session, key, keys["enrolled_at"], "entered")
    if old_status == status:
        return
    ended_at = values.get("ended_at") or keys["enrolled_at"]
    if old_status in ENDED:
        add(session, key, ended_at, str(old_status), n=-1)
    if status in ENDED:
        add(session, key, ended_at, status)


def message_moved(session: Session, message: MessageRow, old_status: str | None) -> None:
    """A message's delivery status changed (a receipt, a bounce): its delivery counts again
    when its run is already written back as sent (before that, the write-back counts it)."""
    before = old_status is not None and delivered(message.channel, old_status)
    after = delivered(message.channel, message.status)
    if before == after:
        return
    run = session.get(StepRunRow, message.step_run_id)
    if run is None or run.status != "sent" or run.enrollment_id is None:
        return
    key = RunKey.of(run.sequence_id, run.version, run.step_id, run.variant)
    add(session, key, message.sent_at, "delivered", n=1 if after else -1)


def message_recorded(session: Session, message: MessageRow) -> None:
    """A message recorded after its run turned sent (a text confirmed late)."""
    message_moved(session, message, None)


def messages_marked(session: Session, step_run_id: str, status: str) -> None:
    """The run's messages are about to take this status in bulk (a bounce, a complaint)."""
    rows = session.execute(
        select(MessageRow).where(col(MessageRow.step_run_id) == step_run_id)
    ).scalars()
    for row in rows:
        moved = MessageRow(
            id=row.id,
            step_run_id=row.step_run_id,
            lead_id=row.lead_id,
            channel=row.channel,
            status=status,
            sent_at=row.sent_at,
            updated_at=row.updated_at,
        )
        message_moved(session, moved, row.status)


def runs_erased(session: Session, lead_id: str, statuses: Iterable[str], now: datetime) -> None:
    """The lead's runs in these states are about to be skipped as `erased` in bulk."""
    rows = session.execute(
        select(StepRunRow).where(
            col(StepRunRow.lead_id) == lead_id,
            col(StepRunRow.status).in_(list(statuses)),
            col(StepRunRow.enrollment_id).is_not(None),
        )
    ).scalars()
    for row in rows:
        key = RunKey.of(row.sequence_id, row.version, row.step_id, row.variant)
        add(session, key, now, "skipped", "erased")


# -- once per thing ---------------------------------------------------------------------------


def mark_once(session: Session, outcome: str, ref: str) -> bool:
    """True the first time (outcome, ref) is marked: that outcome counts now, never again."""
    dialect = session.get_bind().dialect.name
    maker = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        maker(CounterMarkRow)
        .values(outcome=outcome, ref=ref)
        .on_conflict_do_nothing()
        .returning(col(CounterMarkRow.ref))
    )
    return session.execute(statement).first() is not None


def converted_among(session: Session, enrollment_ids: Iterable[str]) -> set[str]:
    ids = sorted(set(enrollment_ids))
    if not ids:
        return set()
    found = session.execute(
        select(col(CounterMarkRow.ref)).where(
            col(CounterMarkRow.outcome) == "converted", col(CounterMarkRow.ref).in_(ids)
        )
    ).scalars()
    return set(found)


# -- the flush --------------------------------------------------------------------------------


def flush(session: Session, chunk: int | None = None) -> None:
    """Write the transaction's tally: deliveries and conversions of the runs it turned sent
    (one query each), then every delta in one INSERT (or one per `chunk` rows)."""
    found: Tally | None = session.info.pop(TALLY, None)
    if found is None:
        return
    if found.sent:
        _sent_outcomes(session, found)
    rows = [
        {
            "sequence_id": key.sequence_id,
            "version": key.version,
            "step_id": key.step_id,
            "variant": key.variant,
            "hour": hour,
            "outcome": outcome,
            "reason": reason,
            "count": n,
            "compacted": False,
        }
        for (key, hour, outcome, reason), n in found.deltas.items()
        if n != 0
    ]
    step = chunk or len(rows) or 1
    for start in range(0, len(rows), step):
        session.execute(insert(CounterRow).values(rows[start : start + step]))


def _sent_outcomes(session: Session, found: Tally) -> None:
    messages = session.execute(
        select(
            col(MessageRow.step_run_id),
            col(MessageRow.channel),
            col(MessageRow.status),
            col(MessageRow.sent_at),
        ).where(col(MessageRow.step_run_id).in_(list(found.sent)))
    ).all()
    done: set[str] = set()
    for run_id, channel, status, sent_at in messages:
        if run_id not in done and delivered(channel, status):
            done.add(run_id)
            found.deltas[(found.sent[run_id][0], hour_of(sent_at), "delivered", "")] += 1
    converted = converted_among(session, [e for _, e, _ in found.sent.values() if e])
    for key, enrollment_id, at in found.sent.values():
        if enrollment_id in converted:
            found.deltas[(key, hour_of(at), "converted", "")] += 1
