"""What an email that arrived in the reply mailbox is: a reply, an auto-reply, a delivery
report (RFC 3464: permanent or temporary), a feedback-loop complaint (ARF, RFC 5965), or
something that cannot be read. Pure: bytes in, a classification out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email import message_from_bytes, message_from_string, policy
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    REPLY = "reply"
    AUTO_REPLY = "auto_reply"
    BOUNCE = "bounce"
    """A delivery report with a permanent failure (5.x.x)."""
    DELAYED = "delayed"
    """A delivery report with only temporary failures (4.x.x)."""
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
    """What made it an auto-reply, or why it could not be read."""


MESSAGE_ID = re.compile(r"<[^<>\s]+>")
STATUS = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")
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
        return _classify(message)
    except Exception as exc:  # a header broken in a way the parser did not foresee
        return Inbound(Kind.UNPARSEABLE, why=f"{type(exc).__name__}: {exc}"[:200])


def _classify(message: Message) -> Inbound:
    if not message.keys():
        return Inbound(Kind.UNPARSEABLE, why="no headers")
    report = message.get_param("report-type") if _type(message) == "multipart/report" else None
    if isinstance(report, str) and report.lower() == "delivery-status":
        return _delivery_report(message)
    if isinstance(report, str) and report.lower() == "feedback-report":
        return _complaint(message)
    base = _basics(message)
    if base.sender is None:
        return Inbound(Kind.UNPARSEABLE, message_id=base.message_id, why="no From address")
    auto = auto_reply_reason(message)
    if auto is not None:
        return _with(base, Kind.AUTO_REPLY, why=auto)
    return base


def auto_reply_reason(message: Message) -> str | None:
    """RFC 3834's Auto-Submitted, the headers autoresponders add, Precedence, a null sender,
    then the subjects out-of-office replies use in the common languages."""
    submitted = _header(message, "Auto-Submitted")
    if submitted and submitted.lower() != "no":
        return f"Auto-Submitted: {submitted}"
    for name in AUTO_HEADERS:
        if message.get(name) is not None:
            return name
    for name in ("Precedence", "X-Precedence"):
        value = (_header(message, name) or "").lower()
        if value in AUTO_PRECEDENCE:
            return f"{name}: {value}"
    if (_header(message, "Return-Path") or "").replace(" ", "") == "<>":
        return "null sender"
    subject = _header(message, "Subject") or ""
    if AUTO_SUBJECT.search(subject):
        return f"subject: {subject[:100]}"
    return None


def _basics(message: Message) -> Inbound:
    parents = _ids(_header(message, "In-Reply-To"))
    # References run oldest to newest: the newest is the likeliest parent
    parents += [i for i in reversed(_ids(_header(message, "References"))) if i not in parents]
    addressed = [
        address
        for name in ("To", "Cc", "Delivered-To", "X-Original-To")
        for address in _addresses(message, name)
    ]
    sender = _addresses(message, "From")
    return Inbound(
        Kind.REPLY,
        message_id=_first_id(_header(message, "Message-ID")),
        sender=sender[0] if sender else None,
        subject=_header(message, "Subject"),
        sent_at=_date(_header(message, "Date")),
        in_reply_to=tuple(parents),
        addressed_to=tuple(dict.fromkeys(addressed)),
    )


def _delivery_report(message: Message) -> Inbound:
    """RFC 3464: a block of per-message fields, then one block per recipient."""
    blocks = _fields(_part(message, ("message/delivery-status", "message/global-delivery-status")))
    permanent: list[str] = []
    temporary: list[str] = []
    status: dict[str, str] = {}
    for block in blocks:
        found = STATUS.search(_header(block, "Status") or "")
        recipient = _typed_address(_header(block, "Final-Recipient")) or _typed_address(
            _header(block, "Original-Recipient")
        )
        action = (_header(block, "Action") or "").lower()
        if found is None or recipient is None or action in ("delivered", "relayed", "expanded"):
            continue
        (permanent if found[1] == "5" else temporary).append(recipient)
        status.setdefault(found[1], found[0])
    ids, runs, _ = _original_message(message)
    base = _basics(message)
    if not permanent and not temporary:
        return Inbound(Kind.UNPARSEABLE, message_id=base.message_id, why="report without status")
    kind = Kind.BOUNCE if permanent else Kind.DELAYED
    return _with(
        base,
        kind,
        in_reply_to=ids,
        step_runs=runs,
        recipients=tuple(permanent or temporary),
        status=status["5"] if permanent else status["4"],
    )


def _complaint(message: Message) -> Inbound:
    """RFC 5965: the feedback fields, then the reported message or its headers."""
    blocks = _fields(_part(message, ("message/feedback-report",)))
    fields = blocks[0] if blocks else None
    feedback = (_header(fields, "Feedback-Type") or "abuse").lower()
    recipients = _addresses(fields, "Original-Rcpt-To")
    ids, runs, original = _original_message(message)
    if not recipients and original is not None:
        recipients = _addresses(original, "To")
    base = _basics(message)
    if fields is None and not ids and not runs:
        return Inbound(Kind.UNPARSEABLE, message_id=base.message_id, why="empty feedback report")
    return _with(
        base,
        Kind.COMPLAINT,
        in_reply_to=ids,
        step_runs=runs,
        recipients=tuple(recipients),
        status=feedback,
    )


def _original_message(message: Message) -> tuple[tuple[str, ...], tuple[str, ...], Message | None]:
    """The reported message (whole, or only its headers) and the ids it carries."""
    part = _part(message, ("message/rfc822", "text/rfc822-headers", "message/global"))
    original: Message | None = None
    if part is not None:
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            original = payload[0]
        elif isinstance(payload, str):
            original = message_from_string(payload.lstrip(), policy=policy.default)
    if original is None:
        return (), (), None
    ids = tuple(_ids(_header(original, "Message-ID")))
    run = (_header(original, "X-Nurture-Step-Run") or "").strip()
    return ids, (run,) if run else (), original


def _part(message: Message, types: tuple[str, ...]) -> Message | None:
    for part in message.walk():
        if _type(part) in types:
            return part
    return None


def _fields(part: Message | None) -> list[Message]:
    """The header blocks of a report part: the parser gives message/delivery-status as a list
    of blocks; other types come as one nested message or as plain text."""
    if part is None:
        return []
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    if isinstance(payload, str):
        text = payload.replace("\r\n", "\n").strip()
        return [message_from_string(block + "\n", policy=policy.default)
                for block in re.split(r"\n\s*\n", text) if block.strip()]  # fmt: skip
    return []


def _with(base: Inbound, kind: Kind, **changes: Any) -> Inbound:
    return replace(base, kind=kind, **changes)


def _type(message: Message) -> str:
    return message.get_content_type().lower()


def _header(message: Message | None, name: str) -> str | None:
    if message is None:
        return None
    value = message.get(name)
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def _addresses(message: Message | None, name: str) -> list[str]:
    if message is None:
        return []
    values = [str(v) for v in message.get_all(name) or []]
    return [a.lower() for _, a in getaddresses(values) if "@" in a]


def _typed_address(value: str | None) -> str | None:
    """`rfc822; ana@example.com` → the address."""
    if not value:
        return None
    address = value.split(";", 1)[-1].strip().strip("<>").lower()
    return address if "@" in address else None


def _ids(value: str | None) -> list[str]:
    return MESSAGE_ID.findall(value or "")


def _first_id(value: str | None) -> str | None:
    found = _ids(value)
    return found[0] if found else (value.strip() if value else None)


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
