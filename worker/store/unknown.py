"""Steps left `unknown` (SPEC §8): the texts still worth asking the provider about, and
whether a message the provider shows is one we have recorded already."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session, col

from worker.store.tables import LeadRow, MessageRow, StepRunRow

TEXT_CHANNELS = ("sms", "whatsapp")


@dataclass(frozen=True)
class UnknownText:
    step_run_id: str
    lead_id: str
    channel: str
    claimed_at: datetime
    phone: str | None


def unknown_texts(session: Session, since: datetime, limit: int) -> list[UnknownText]:
    """Texts handed to the provider since `since` and never recorded, oldest first."""
    rows = session.execute(
        select(
            col(StepRunRow.id),
            col(StepRunRow.lead_id),
            col(StepRunRow.channel),
            col(StepRunRow.claimed_at),
            col(LeadRow.phone),
        )
        .join(LeadRow, col(LeadRow.id) == col(StepRunRow.lead_id))
        .where(
            col(StepRunRow.status) == "unknown",
            col(StepRunRow.channel).in_(TEXT_CHANNELS),
            col(StepRunRow.claimed_at) >= since,
        )
        .order_by(col(StepRunRow.claimed_at))
        .limit(limit)
    ).all()
    return [UnknownText(r[0], r[1], str(r[2]), r[3], r[4]) for r in rows if r[3] is not None]


def recorded(session: Session, provider_message_ids: Iterable[str]) -> set[str]:
    """The provider ids among these that a message row already carries."""
    wanted = list(provider_message_ids)
    if not wanted:
        return set()
    found = session.execute(
        select(col(MessageRow.provider_message_id)).where(
            col(MessageRow.provider_message_id).in_(wanted)
        )
    ).scalars()
    return {value for value in found if value is not None}
