"""The copies of sent emails (subject, text and HTML as the provider got them): one read back
for the console, shown inert; the old ones pruned after `copy_retention_days`. Erasing a
person drops theirs (support/repository.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from worker.kit.errors import NotFound
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.messages import EmailCopy, kept_copy, prune_copies

PRUNE_BATCH = 1_000
"""Copies dropped per transaction: short locks, and a long backlog still moves."""
FRAME_POLICY = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"
"""The Content-Security-Policy of a shown copy: no script, no request anywhere (the open
pixel and remote images stay unloaded), only inline styles and embedded images."""
_HEAD = re.compile(r"<head\b[^>]*>", re.IGNORECASE)
_DOCTYPE = re.compile(r"^\s*<!doctype[^>]*>", re.IGNORECASE)
_NO_LINKS = '<base target="_blank">'
"""Links open a new window, which the frame's sandbox forbids: clicking a tracked link in a
copy goes nowhere and counts nothing."""


@dataclass(frozen=True)
class ShownCopy:
    message_id: str
    lead_id: str
    copy: EmailCopy


def email_copy(runtime: Runtime, message_id: str) -> ShownCopy:
    """The copy of a sent email; NotFound when there is no such message or no copy is kept
    (an SMS, a copy pruned after its retention, a person erased)."""
    if len(message_id) > 32 or "\x00" in message_id:
        raise NotFound(f"no message {message_id[:32]!r}")
    with transaction(runtime.database) as session:
        row, found = kept_copy(session, message_id)
    if row is None:
        raise NotFound(f"no message {message_id}")
    if found is None:
        days = runtime.config.copy_retention_days
        raise NotFound(
            f"no copy of message {message_id} is kept: only emails keep one, for {days} days, "
            "and erasing the person drops it"
        )
    return ShownCopy(row.id, row.lead_id, found)


def framed_html(html: str) -> str:
    """The copy's HTML as the console frames it: the same document, its links inert."""
    found = _HEAD.search(html) or _DOCTYPE.match(html)
    at = found.end() if found else 0
    return html[:at] + _NO_LINKS + html[at:]


def prune_old_copies(runtime: Runtime, now: datetime) -> int:
    """Drop every copy older than the retention, a batch per transaction; how many."""
    before = now - timedelta(days=runtime.config.copy_retention_days)
    pruned = 0
    while True:
        with transaction(runtime.database) as session:
            count = prune_copies(session, before, PRUNE_BATCH)
        pruned += count
        if count < PRUNE_BATCH:
            return pruned
