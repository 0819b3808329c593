"""The two machine-readable reports: delivery status notifications (RFC 3464) and feedback
loop complaints (ARF, RFC 5965). Pure: a parsed message in, what it reports out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import Message

from worker.inbox import message as mime
from worker.inbox.failures import is_mailbox_full

STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
BASIC_CODE = re.compile(r"(?<![\d.])([245])\d\d(?![\d.])")
DELIVERY_STATUS = ("message/delivery-status", "message/global-delivery-status")
DONE = ("delivered", "relayed", "expanded")


@dataclass
class Delivery:
    """What a delivery report says, per recipient: permanent or temporary, and a status."""

    permanent: list[str] = field(default_factory=list)
    temporary: list[str] = field(default_factory=list)
    statuses: dict[str, str] = field(default_factory=dict)
    """The first status seen per class: {'5': '5.1.1', '4': '4.2.2'}."""
    failed: bool = False
    """A recipient block reported a failure or a delay, whether or not it named an address."""
    delivered: bool = False
    """A recipient block reported a success (delivered, relayed, expanded)."""


@dataclass(frozen=True)
class Feedback:
    feedback_type: str
    recipients: tuple[str, ...]


def is_delivery_report(message: Message) -> bool:
    return _report_type(message) == "delivery-status" or (
        mime.part(message, DELIVERY_STATUS) is not None
    )


def is_feedback_report(message: Message) -> bool:
    return _report_type(message) == "feedback-report" or (
        mime.part(message, ("message/feedback-report",)) is not None
    )


def delivery_status(message: Message) -> Delivery:
    """RFC 3464: a block of per-message fields, then one block per recipient. The address is
    the one the message was sent to (Original-Recipient) when the report gives it, then the
    one it ended at (Final-Recipient, after aliases)."""
    found = Delivery()
    blocks = 0
    for block in mime.header_blocks(mime.part(message, DELIVERY_STATUS)):
        action = (mime.header(block, "Action") or "").lower()
        status = mime.header(block, "Status") or ""
        diagnostic = mime.header(block, "Diagnostic-Code") or ""
        if not (action or status):
            continue  # the per-message block
        temporary, code = _temporary(action, status, diagnostic)
        if action.startswith(DONE) or (code or "").startswith("2"):
            found.delivered = True
            continue
        if code is None and not action.startswith(("fail", "error", "delayed")):
            continue
        found.failed = True
        found.statuses.setdefault(
            "4" if temporary else "5", code or ("4.0.0" if temporary else "5.0.0")
        )
        recipients = [
            mime.typed_address(mime.header(block, name))
            for name in ("Original-Recipient", "Final-Recipient", "X-Actual-Recipient")
        ]
        listed = found.temporary if temporary else found.permanent
        for recipient in recipients:
            if recipient is not None and recipient not in listed:
                listed.append(recipient)
        blocks += 1
    if blocks == 1 and found.permanent and is_mailbox_full(mime.report_text(message)):
        # one recipient, a bare 5.0.0, and the words say why: its mailbox is full
        found.temporary, found.permanent = found.permanent, []
        found.statuses.setdefault("4", found.statuses.pop("5"))
    return found


def _temporary(action: str, status: str, diagnostic: str) -> tuple[bool, str | None]:
    """Whether a recipient's failure is temporary, and its status code. A delay, a 4.x.x status
    and a full mailbox are temporary (the address works); a 5.x.x status or a failure without
    one is permanent."""
    enhanced = STATUS.search(status) or STATUS.search(diagnostic)
    basic = BASIC_CODE.search(status) or BASIC_CODE.search(diagnostic)
    code = enhanced[0] if enhanced else (f"{basic[1]}.0.0" if basic else None)
    temporary = (
        action.startswith("delayed")
        or (code is not None and code.startswith("4"))
        or (code is not None and code.startswith("5.2.2"))
        or is_mailbox_full(f"{status} {diagnostic}")
    )
    return temporary, code


def is_read_receipt(message: Message) -> bool:
    """RFC 8098 message disposition notifications: "Read: Hello Ana", sent by a mail client."""
    return _report_type(message) == "disposition-notification" or (
        mime.part(message, ("message/disposition-notification",)) is not None
    )


def feedback(message: Message) -> Feedback | None:
    """RFC 5965: the feedback fields, then the reported message or its headers. None for a
    report that carries neither."""
    blocks = mime.header_blocks(mime.part(message, ("message/feedback-report",)))
    fields = blocks[0] if blocks else None
    original = mime.returned_message(message)
    if fields is None and original is None:
        return None
    recipients = mime.addresses(fields, "Original-Rcpt-To") or mime.addresses(
        fields, "Removal-Recipient"
    )
    if not recipients and original is not None:
        recipients = mime.addresses(original, "To")
    feedback_type = (mime.header(fields, "Feedback-Type") or "abuse").lower()
    return Feedback(feedback_type, tuple(dict.fromkeys(recipients)))


def _report_type(message: Message) -> str | None:
    if mime.content_type(message) != "multipart/report":
        return None
    value = message.get_param("report-type")
    return value.lower() if isinstance(value, str) else None
