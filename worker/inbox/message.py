"""Reading parts of a parsed email the way the inbox classifier needs them: one header as
plain text, addresses, Message-IDs, the parts of a report without descending into the
messages it quotes, the report's own text, and the message it returns.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_string, policy
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime

MESSAGE_ID = re.compile(r"<[^<>\s]+>")
ADDRESS = re.compile(r"^[^@\s<>();,:\"]+@(?:[a-z0-9-]+\.)+[a-z0-9-]+$|^[^@\s<>]+@\[[0-9.:a-f]+\]$")
"""An address worth reporting: a domain with a dot (not `user@sims-ms-daemon`, not `dylan`)."""
RETURNED = ("message/rfc822", "text/rfc822-headers", "message/global", "message/global-headers")
"""The part types a report quotes the returned message in."""
QUOTE_STARTS = re.compile(
    r"^[ \t>|-]*(?:-+ ?)?(?:below this line is a copy of the message|this is a copy of the message"
    r"|enclosed is a copy of the message|original message follows|the original message"
    r" (?:was received|is attached|follows)|the first \d+ lines of your original message"
    r"|unsent message below|returned message|original message headers?)",
    re.IGNORECASE | re.MULTILINE,
)
"""Where a plain-text report starts quoting the returned message (qmail, Exim, Yahoo …)."""


def header(message: Message | None, name: str) -> str | None:
    if message is None:
        return None
    try:
        value = message.get(name)
    except Exception:  # a header the parser chokes on is treated as absent
        return None
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def addresses(message: Message | None, name: str) -> list[str]:
    if message is None:
        return []
    values = [str(v) for v in message.get_all(name) or []]
    return [a.lower() for _, a in getaddresses(values) if "@" in a]


def address(value: str) -> str | None:
    """`ana@example.com`, `<Ana@Example.com>` → the address lower-cased, if it is one."""
    found = value.strip().strip("<>\"'").strip().lower()
    return found if ADDRESS.match(found) else None


def typed_address(value: str | None) -> str | None:
    """`rfc822; ana@example.com`, `LOCAL;<ana@example.com>` → the address."""
    if not value:
        return None
    return address(value.split(";", 1)[-1])


def ids(value: str | None) -> list[str]:
    return MESSAGE_ID.findall(value or "")


def first_id(value: str | None) -> str | None:
    found = ids(value)
    return found[0] if found else (value.strip() if value else None)


def date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def content_type(message: Message) -> str:
    return message.get_content_type().lower()


def own_parts(message: Message) -> Iterator[Message]:
    """The message and its parts, without going into a message it quotes (message/rfc822):
    a forwarded report is the forwarder's message, not a report."""
    yield message
    if content_type(message).startswith("message/"):
        return
    payload = message.get_payload()
    if message.is_multipart() and isinstance(payload, list):
        for part in payload:
            if isinstance(part, Message):
                yield from own_parts(part)


def part(message: Message, types: tuple[str, ...]) -> Message | None:
    for found in own_parts(message):
        if content_type(found) in types:
            return found
    return None


def report_text(message: Message, limit: int = 20_000) -> str:
    """The report's own words: its text parts (HTML as text), not the message it returns, cut
    where a plain-text report starts quoting it."""
    text = _all_text(message, limit)
    quoted = QUOTE_STARTS.search(text)
    return text[: quoted.start()] if quoted else text


def _all_text(message: Message, limit: int) -> str:
    texts = []
    for found in own_parts(message):
        kind = content_type(found)
        if kind not in ("text/plain", "text/html") or _is_attachment(found):
            continue
        text = _decoded(found)
        if kind == "text/html":
            text = re.sub(r"<[^>]*>", " ", re.sub(r"(?is)<(style|script)\b.*?</\1>", " ", text))
        texts.append(text)
    return "\n".join(texts)[:limit]


def returned_message(message: Message) -> Message | None:
    """The message a report returns, whole or only its headers; in a plain-text report, the
    copy after its "Below this line is a copy of the message" (qmail, Exim …)."""
    found = part(message, RETURNED)
    if found is None:
        return _quoted_copy(_all_text(message, 200_000))
    payload = found.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    if isinstance(payload, str):
        return message_from_string(payload.lstrip(), policy=policy.default)
    return None


def _quoted_copy(text: str) -> Message | None:
    marker = QUOTE_STARTS.search(text)
    if marker is None:
        return None
    lines = text[marker.end() :].splitlines()[1:]
    while lines and not lines[0].strip():
        lines.pop(0)
    if lines and lines[0].startswith(">"):  # "> Received: …", quoted once more
        lines = [re.sub(r"^> ?", "", line) for line in lines]
    copy = message_from_string("\n".join(lines) + "\n", policy=policy.default)
    return copy if copy.keys() else None


def header_blocks(found: Message | None) -> list[Message]:
    """The header blocks of a report part: the parser gives message/delivery-status as a list
    of blocks; other types come as one nested message or as plain text."""
    if found is None:
        return []
    payload = found.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    if isinstance(payload, str):
        text = _decoded(found) if found.get("Content-Transfer-Encoding") else payload
        text = text.replace("\r\n", "\n").strip()
        return [message_from_string(block + "\n", policy=policy.default)
                for block in re.split(r"\n\s*\n", text) if block.strip()]  # fmt: skip
    return []


def _is_attachment(found: Message) -> bool:
    return (header(found, "Content-Disposition") or "").lower().startswith("attachment")


def _decoded(found: Message) -> str:
    data = found.get_payload(decode=True)
    if not isinstance(data, bytes):
        payload = found.get_payload()
        return payload if isinstance(payload, str) else ""
    charset = found.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        return data.decode("latin-1")
