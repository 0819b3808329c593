"""What an email that arrived in the reply mailbox is: a reply, an auto-reply, a delivery
failure (permanent or temporary; an RFC 3464 report or a mail server's own format), a
feedback-loop complaint (ARF, RFC 5965), or something that cannot be read. Pure: bytes in, a
classification out. The reports are read in worker.inbox.reports, the other failures in
worker.inbox.failures; a failure or a complaint is never taken for a person's reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from email import message_from_bytes, policy
from email.message import Message
from enum import StrEnum
from typing import Any

from worker.inbox import failures, reports
from worker.inbox import message as mime


class Kind(StrEnum):
    REPLY = "reply"
    AUTO_REPLY = "auto_reply"
    BOUNCE = "bounce"
    """A delivery failure that is permanent (5.x.x: the address does not work)."""
    DELAYED = "delayed"
    """Only temporary failures: a delay, a 4.x.x status, a full mailbox."""
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    """Sent to the mailto List-Unsubscribe address, the signed token in its subject."""
    UNPARSEABLE = "unparseable"


@dataclass(frozen=True)
class Inbound:
    kind: Kind
    message_id: str | None = None
    sender: str | None = None
    """The From address, lower-cased."""
    subject: str | None = None
    sent_at: datetime | None = None
    in_reply_to: tuple[str, ...] = ()
    """Message-IDs the message names as its parents, the direct parent first; for a report,
    the reported message's Message-ID."""
    step_runs: tuple[str, ...] = ()
    """`X-Nurture-Step-Run` of the reported message (a report quotes the headers we sent)."""
    addressed_to: tuple[str, ...] = ()
    """To, Cc, Delivered-To and X-Original-To: where a reply+TOKEN address shows up."""
    recipients: tuple[str, ...] = ()
    """A report's failed or complaining recipients."""
    status: str | None = None
    """A report's status code (5.1.1) or feedback type (abuse)."""
    why: str | None = None
    """What made it an auto-reply or a failure without a report, or why it could not be read."""


AUTO_PRECEDENCE = {"auto_reply", "bulk", "list", "junk"}
AUTO_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponder")
AUTO_SUBJECT = re.compile(
    r"out of (the )?office|automatic reply|auto[- ]?reply|auto[- ]?response|^auto:|^ooo\b"
    r"|abwesenheitsnotiz|automatische antwort|r[ée]ponse automatique|absent du bureau"
    r"|respuesta autom[áa]tica|fuera de la oficina|risposta automatica|fuori ufficio"
    r"|automatisch antwoord|afwezigheidsbericht|vacation reply|away from (the )?office",
    re.IGNORECASE,
)


def classify(raw: bytes) -> Inbound:
    """What the message is. Python's parser reads almost anything; a message it cannot make
    sense of (no headers, no sender, a report without a status) is UNPARSEABLE with why."""
    try:
        message = message_from_bytes(raw, policy=policy.default)
        return _classify(message, raw)
    except Exception as exc:  # a header broken in a way the parser did not foresee
        return Inbound(Kind.UNPARSEABLE, why=f"{type(exc).__name__}: {exc}"[:200])


def _classify(message: Message, raw: bytes) -> Inbound:
    """Reports first (they carry Auto-Submitted and a null sender too), then failures in a
    mail server's own words, then auto-replies; what is left was written by a person."""
    if not message.keys():
        return Inbound(Kind.UNPARSEABLE, why="no headers")
    if reports.is_feedback_report(message):
        return _complaint(message)
    if reports.is_delivery_report(message):
        return _delivery_report(message, raw)
    mail_system = failures.from_mail_system(message)
    if mail_system is not None:
        found = failures.text_failure(message, raw) or failures.failure_without_address(message)
        if found is not None:
            return _failure(message, found, f"{mail_system}; {found.why}")
    elif failures.reads_like_failure(message):
        found = failures.text_failure(message, raw)
        if found is not None:
            return _failure(message, found, f"failure subject and words; {found.why}")
    base = _basics(message)
    if reports.is_read_receipt(message):
        return _with(base, Kind.AUTO_REPLY, why="read receipt")
    if base.sender is None and mail_system is None:
        return Inbound(Kind.UNPARSEABLE, message_id=base.message_id, why="no From address")
    auto = auto_reply_reason(message) or mail_system
    if auto is not None:
        return _with(base, Kind.AUTO_REPLY, why=auto)
    return base


def auto_reply_reason(message: Message) -> str | None:
    """RFC 3834's Auto-Submitted, the headers autoresponders add, Precedence, a null sender,
    then the subjects out-of-office replies use in the common languages."""
    submitted = mime.header(message, "Auto-Submitted")
    if submitted and submitted.lower() != "no":
        return f"Auto-Submitted: {submitted}"
    for name in AUTO_HEADERS:
        if message.get(name) is not None:
            return name
    for name in ("Precedence", "X-Precedence"):
        value = (mime.header(message, name) or "").lower()
        if value in AUTO_PRECEDENCE:
            return f"{name}: {value}"
    if (mime.header(message, "Return-Path") or "").replace(" ", "") == "<>":
        return "null sender"
    subject = mime.header(message, "Subject") or ""
    if AUTO_SUBJECT.search(subject):
        return f"subject: {subject[:100]}"
    return None


def _basics(message: Message) -> Inbound:
    parents = mime.ids(mime.header(message, "In-Reply-To"))
    # References run oldest to newest: the newest is the likeliest parent
    references = reversed(mime.ids(mime.header(message, "References")))
    parents += [i for i in references if i not in parents]
    addressed = [
        address
        for name in ("To", "Cc", "Delivered-To", "X-Original-To")
        for address in mime.addresses(message, name)
    ]
    sender = mime.addresses(message, "From")
    return Inbound(
        Kind.REPLY,
        message_id=mime.first_id(mime.header(message, "Message-ID")),
        sender=sender[0] if sender else None,
        subject=mime.header(message, "Subject"),
        sent_at=mime.date(mime.header(message, "Date")),
        in_reply_to=tuple(parents),
        addressed_to=tuple(dict.fromkeys(addressed)),
    )


def _delivery_report(message: Message, raw: bytes) -> Inbound:
    """An RFC 3464 report; when its blocks name no address it can use (an X.400 recipient, a
    local name), the failure detectors read its text."""
    found = reports.delivery_status(message)
    if found.permanent or found.temporary:
        permanent = found.permanent
        return _reported(
            message,
            Kind.BOUNCE if permanent else Kind.DELAYED,
            recipients=tuple(permanent or found.temporary),
            status=found.statuses["5" if permanent else "4"],
        )
    if found.delivered and not found.failed:
        return _reported(message, Kind.AUTO_REPLY, why="delivery report: delivered")
    text = failures.text_failure(message, raw)
    if text is not None:
        return _failure(message, text, f"delivery report; {text.why}")
    if found.failed:
        kind = Kind.BOUNCE if "5" in found.statuses else Kind.DELAYED
        status = found.statuses.get("5") or found.statuses.get("4")
        return _reported(message, kind, status=status, why="delivery report without an address")
    message_id = mime.first_id(mime.header(message, "Message-ID"))
    return Inbound(Kind.UNPARSEABLE, message_id=message_id, why="report without status")


def _failure(message: Message, found: failures.TextFailure, why: str) -> Inbound:
    kind = Kind.BOUNCE if found.permanent_failure else Kind.DELAYED
    return _reported(
        message,
        kind,
        recipients=found.permanent if kind is Kind.BOUNCE else found.temporary,
        status=found.status,
        why=why,
    )


def _complaint(message: Message) -> Inbound:
    """RFC 5965: the feedback fields, then the reported message or its headers."""
    found = reports.feedback(message)
    if found is None:
        message_id = mime.first_id(mime.header(message, "Message-ID"))
        return Inbound(Kind.UNPARSEABLE, message_id=message_id, why="empty feedback report")
    return _reported(
        message, Kind.COMPLAINT, recipients=found.recipients, status=found.feedback_type
    )


def _reported(message: Message, kind: Kind, **changes: Any) -> Inbound:
    """A report: the ids it matches by are those of the message it returns."""
    original = mime.returned_message(message)
    ids = tuple(mime.ids(mime.header(original, "Message-ID")))
    run = (mime.header(original, "X-Nurture-Step-Run") or "").strip()
    base = _basics(message)
    return replace(base, kind=kind, in_reply_to=ids, step_runs=(run,) if run else (), **changes)


def _with(base: Inbound, kind: Kind, **changes: Any) -> Inbound:
    return replace(base, kind=kind, **changes)
