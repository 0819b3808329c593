"""Delivery failures that are not RFC 3464 reports: the plain-text and vendor formats of qmail,
Exim, old sendmail and Exchange, Yahoo, AOL, GroupWise, mail.ru … Mailman's bounce detectors
(`flufl.bounce`) find the failed addresses; this module decides first whether a message comes
from a mail system at all, so a person who writes "your email bounced" stays a person, and
then which failures are temporary. Pure: a parsed message in, a failure or None out.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.utils import getaddresses

from flufl.bounce import all_failures

from worker.inbox import message as mime

# flufl.bounce logs each detector it runs (INFO) and each exception a detector raises, which
# _scan handles: without this a worker's log would carry seventeen lines per bounce.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)

MAIL_SYSTEM = re.compile(
    r"^(?:mailer[-_.]?daemon|mail[-_.]?daemon|postmaster|post[-_.]?office|mail[-_.]?delivery\S*"
    r"|mdaemon|mail[-_.]?admin\S*|ndr|bounces?|mail[-_.]?system|mailer|smtp[-_.]?gateway)@",
    re.IGNORECASE,
)
"""The From addresses mail servers send reports from."""
MAIL_SYSTEM_NAME = re.compile(
    r"mail(?:er)?[- _]?daemon|postmaster|mail delivery (?:system|subsystem|service)"
    r"|mail (?:administrator|system|delivery)|internet mail delivery|system administrator"
    r"|e-?mail delivery|content[- ]filter|mail ?transport|nachrichtenübermittlung",
    re.IGNORECASE,
)
"""Their display names (`Mail Delivery Subsystem <mailer-daemon@googlemail.com>`)."""
FAILURE_SUBJECT = re.compile(
    r"undeliver|not (?:be )?delivered|delivery (?:status|failure|failed|problem|report|notif)"
    r"|failure notice|returned mail|mail delivery|returned to sender|non[- ]?delivery"
    r"|mail (?:system )?error|failed mail|mail error|delayed mail|message delayed|warning: message"
    r"|delivery has failed|permanent (?:delivery )?failure|nicht zugestellt|unzustellbar"
    r"|non remis|no entregado|non recapitato|niet bezorgd|non distribuibile|mail not delivered"
    r"|processing error|unknown user|user unknown|awaits moderator|could not deliver",
    re.IGNORECASE,
)
REPLY_PREFIX = re.compile(r"^\s*(?:re|aw|sv|vs|antw|r|ref|res)\s*(?:\[\d+\])?\s*:", re.IGNORECASE)
FORWARD_PREFIX = re.compile(r"^\s*(?:fw|fwd|wg|tr|rv|doorst)\s*:", re.IGNORECASE)
AUTO_REPLY_PREFIX = re.compile(
    r"^\s*(?:automatic reply|auto[- ]?reply|auto[- ]?response|auto|out of (?:the )?office|ooo"
    r"|abwesenheitsnotiz|automatische antwort|r[ée]ponse automatique|respuesta autom[áa]tica"
    r"|risposta automatica|automatisch antwoord)\b",
    re.IGNORECASE,
)
MAILBOX_FULL = re.compile(
    r"mail ?box (?:is )?(?:full|over ?quota)|mail ?box space not enough|over ?quota"
    r"|quota (?:exceeded|violation|full)|exceed\w* (?:\w+ ){0,3}quota|disk ?quota|diskspace quota"
    r"|(?:insufficient|not enough|does not have enough) (?:\w+ )?(?:disk |storage )?space"
    r"|storage (?:space|quota|limit)|mailbox (?:size|storage) (?:limit|exceeded)|full mailbox"
    r"|account is (?:full|over)|mailbox (?:has )?exceeded|user'?s? (?:mailbox|disk) (?:is )?full"
    r"|5\.2\.2\b|4\.2\.2\b",
    re.IGNORECASE,
)
"""A full mailbox: the address works; the person can empty it."""
DELAY = re.compile(
    r"\bdelayed\b|not yet been delivered|not been delivered yet|has not yet been"
    r"|will (?:continue to )?(?:be )?retr|still (?:being )?(?:retried|trying)|warning only"
    r"|do not need to resend|temporar(?:y|ily)"
    r"|deferred|delivery attempts|maximum (?:delivery )?attempts|retry (?:timeout|time)"
    r"|try again later|timed? ?out|expired|could not be delivered within|delivery incomplete",
    re.IGNORECASE,
)
"""A delay, or a failure that only says the message waited too long."""
PERMANENT = re.compile(
    r"permanent|user unknown|unknown user|no such user|does ?n[o']t exist|address rejected"
    r"|no longer (?:valid|exists?|active|in use)|wrong address|address is wrong"
    r"|invalid (?:recipient|address|mailbox)|no mailbox|not (?:a )?valid|unknown (?:recipient|"
    r"address|mailbox)|(?<![\d.])5\.[0-7]\.\d{1,3}\b|(?<![\d.])55\d\b|given up",
    re.IGNORECASE,
)
FAILURE_TEXT = re.compile(
    r"could ?n[o']t be delivered|was ?n[o']t delivered|not (?:be )?delivered|undeliver"
    r"|delivery (?:to the following \S+ )?(?:has )?failed|unable to deliver|did not reach"
    r"|delivery failure|returned to sender|mail delivery (?:software|system|subsystem)"
    r"|permanent (?:fatal )?error|failed recipient|following address\S* failed",
    re.IGNORECASE,
)


NON_ASCII = re.compile(rb"[\x80-\xff]")
NEXT_ADDRESS = re.compile(r"^[\s<\"'*-]*[^\s@<>]+@")


@dataclass(frozen=True)
class TextFailure:
    permanent: tuple[str, ...]
    temporary: tuple[str, ...]
    status: str | None
    why: str
    transient: bool = False
    """Set when no address was found and the words say the failure is temporary."""

    @property
    def permanent_failure(self) -> bool:
        return bool(self.permanent) or not (self.temporary or self.transient)


def is_mailbox_full(text: str) -> bool:
    return MAILBOX_FULL.search(text) is not None


def from_mail_system(message: Message) -> str | None:
    """Why the message was surely sent by a mail server rather than a person: the sender,
    Exim's X-Failed-Recipients, Exchange's NDR mark, or a failure subject on a machine-sent
    message (null sender, Auto-Submitted, a returned message attached). None otherwise."""
    if mime.header(message, "X-Failed-Recipients"):
        return "X-Failed-Recipients"
    if message.get("X-MS-Exchange-Message-Is-Ndr") is not None:
        return "X-MS-Exchange-Message-Is-Ndr"
    if _sent_by_mail_system(_raw_header(message, "From")):
        return "mail system sender"
    if not _failure_subject(message):
        return None
    machine = (
        (mime.header(message, "Return-Path") or "").replace(" ", "") == "<>"
        or (mime.header(message, "Auto-Submitted") or "no").lower() != "no"
        or mime.part(message, mime.RETURNED) is not None
    )
    return "failure subject" if machine else None


def reads_like_failure(message: Message) -> bool:
    """A failure subject over failure words, from an unusual sender (a virus scanner, a list
    server, `"System Administrator"@…`): a report only if the detectors find an address in it,
    so a person writing "Delivery failure: my parcel could not be delivered" stays a person."""
    return _failure_subject(message) and FAILURE_TEXT.search(mime.report_text(message)) is not None


def text_failure(message: Message, raw: bytes) -> TextFailure | None:
    """The failed addresses flufl.bounce finds, each permanent or temporary by what the
    report says about it; None when it finds none."""
    scanned = _scan(raw)
    if scanned is None:
        return None
    temporary_found, permanent_found = scanned
    text = mime.report_text(message)
    found = sorted({*_decoded(permanent_found), *_decoded(temporary_found)})
    flagged = _decoded(temporary_found)
    permanent: list[str] = []
    temporary: list[str] = []
    for failed in found:
        said = _about(text, failed, several=len(found) > 1)
        (temporary if failed in flagged or _is_temporary(said) else permanent).append(failed)
    if not permanent and not temporary:
        return None
    return TextFailure(tuple(permanent), tuple(temporary), status_in(text), "text report")


def _scan(raw: bytes) -> tuple[frozenset[bytes], frozenset[bytes]] | None:
    """flufl.bounce's detectors, on a copy whose non-ASCII bytes are `?` (its patterns are
    ASCII; an 8-bit header would reach it as a Header object it cannot read). A detector that
    still raises stops its scan: once more without the From header it trips over most."""
    message = message_from_bytes(NON_ASCII.sub(b"?", raw))
    try:
        return all_failures(message)
    except Exception:
        del message["From"]
    try:
        return all_failures(message)
    except Exception:
        return None


def failure_without_address(message: Message) -> TextFailure | None:
    """A report from a mail system whose failed address cannot be found (it only names the
    returned message): temporary or permanent by its words, None if it reports no failure."""
    text = mime.report_text(message)
    subject = mime.header(message, "Subject") or ""
    if _is_temporary(f"{subject}\n{text}"):
        return TextFailure((), (), status_in(text), "temporary failure, no address", True)
    if FAILURE_TEXT.search(text) or FAILURE_SUBJECT.search(subject):
        return TextFailure((), (), status_in(text), "failure, no address")
    return None


def status_in(text: str) -> str | None:
    enhanced = re.search(r"(?<![\d.])[45]\.\d{1,3}\.\d{1,3}(?![\d.])", text)
    return enhanced[0] if enhanced else None


def _failure_subject(message: Message) -> bool:
    subject = mime.header(message, "Subject") or ""
    return FAILURE_SUBJECT.search(subject) is not None and not _answering(message, subject)


def _answering(message: Message, subject: str) -> bool:
    """`Fwd: Undelivered Mail …` is a person passing a report on, `Automatic reply: …` their
    autoresponder, and `Re: Undeliverable …` from a mail client (it threads: In-Reply-To,
    References, Outlook's Thread-Index) a person answering one; some servers prefix their own
    reports with `RE:` too."""
    if FORWARD_PREFIX.match(subject) or AUTO_REPLY_PREFIX.match(subject):
        return True
    threaded = any(
        mime.header(message, name) for name in ("In-Reply-To", "References", "Thread-Index")
    )
    return REPLY_PREFIX.match(subject) is not None and threaded


def _is_temporary(said: str) -> bool:
    said = " ".join(said.split())  # a phrase may be wrapped over two lines
    if MAILBOX_FULL.search(said):
        return True
    return DELAY.search(said) is not None and PERMANENT.search(said) is None


def _about(text: str, failed: str, *, several: bool) -> str:
    """What the report says about one address: the whole text when it names one, else the
    lines from the address on, up to a line that starts with another address."""
    if not several:
        return text
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if failed in line.lower():
            said = [line]
            for following in lines[number + 1 : number + 8]:
                if NEXT_ADDRESS.match(following):
                    break
                said.append(following)
            return "\n".join(said)
    return text


def _decoded(found: frozenset[bytes]) -> set[str]:
    addresses = (mime.address(item.decode("ascii", "replace")) for item in found)
    return {a for a in addresses if a is not None}


def _sent_by_mail_system(sender: str) -> bool:
    if re.search(r"<\s*>", sender):
        return True  # `"Jetmail System" <>`
    return any(
        MAIL_SYSTEM.match(f"{address}@") is not None or MAIL_SYSTEM_NAME.search(name) is not None
        for name, address in getaddresses([sender])
    )


def _raw_header(message: Message, name: str) -> str:
    try:
        return str(message.get(name) or "")
    except Exception:
        return ""
