"""Sent messages as providers know them: found by the provider's id, their delivery status
kept up to date by status callbacks; the copy of each email as sent, packed small, read back
for the console and pruned after its retention."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlmodel import Session, col

from worker.store import counters
from worker.store.tables import MessageRow


def find_by_provider_id(
    session: Session, provider_message_id: str, *, lock: bool = False
) -> MessageRow | None:
    """The message a provider id names (the earliest, should a provider ever reuse one).

    With `lock`, the row is locked and re-read from the database: taken under the lead's lock,
    it shows what a concurrent callback committed, not what this session saw before."""
    statement = (
        select(MessageRow)
        .where(col(MessageRow.provider_message_id) == provider_message_id)
        .order_by(col(MessageRow.sent_at), col(MessageRow.id))
        .limit(1)
    )
    if lock:
        statement = statement.with_for_update().execution_options(populate_existing=True)
    found: MessageRow | None = session.execute(statement).scalars().first()
    return found


def set_status(session: Session, row: MessageRow, status: str, now: datetime) -> None:
    before = row.status
    row.status = status
    row.updated_at = now
    session.add(row)
    counters.message_moved(session, row, before)  # a delivery counted, or taken back
    counters.flush(session)


# -- the copy of an email as sent ------------------------------------------------------------

COPY_LEVEL = 6
"""zlib's default: most of the size saved for a fraction of level 9's time."""


@dataclass(frozen=True)
class EmailCopy:
    subject: str
    text: str
    html: str


def pack_copy(subject: str, text: str, html: str) -> bytes:
    """The copy as stored: zlib-compressed JSON {subject, text, html}."""
    data = {"subject": subject, "text": text, "html": html}
    return zlib.compress(json.dumps(data, ensure_ascii=False).encode(), COPY_LEVEL)


def unpack_copy(packed: bytes) -> EmailCopy:
    data = json.loads(zlib.decompress(packed))
    return EmailCopy(str(data["subject"]), str(data["text"]), str(data["html"]))


def kept_copy(session: Session, message_id: str) -> tuple[MessageRow | None, EmailCopy | None]:
    """The message of that id and its copy (None when none was kept, or it was pruned)."""
    row = session.get(MessageRow, message_id)
    if row is None or row.sent_copy is None:
        return row, None
    return row, unpack_copy(row.sent_copy)


def messages_with_copy(session: Session, lead_id: str) -> set[str]:
    """The ids of the lead's messages whose copy is still kept."""
    rows = session.execute(
        select(col(MessageRow.id)).where(
            col(MessageRow.lead_id) == lead_id, col(MessageRow.sent_copy).is_not(None)
        )
    ).scalars()
    return set(rows)


def prune_copies(session: Session, before: datetime, limit: int) -> int:
    """Drop the copies of up to `limit` messages sent before `before`, oldest first; how many.
    The partial index on kept copies finds them without reading the rest of the table."""
    oldest = (
        select(col(MessageRow.id))
        .where(col(MessageRow.sent_copy).is_not(None), col(MessageRow.sent_at) < before)
        .order_by(col(MessageRow.sent_at))
        .limit(limit)
    )
    result = session.execute(
        update(MessageRow)
        .where(col(MessageRow.id).in_(oldest))
        .values(sent_copy=None)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
