"""Build the RFC 5322 message for an `EmailMessage` and, optionally, DKIM-sign its bytes.

multipart/alternative with the plain part first and the HTML part last (clients show the last
part they can), both UTF-8 quoted-printable so the message is 7-bit clean; the preheader goes
into the HTML as hidden text right after `<body>`, where inboxes look for their preview line.
"""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage as Mime
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path

import dkim

from integrations.ports import EmailMessage

# RFC 5322's line limit: long header values (List-Unsubscribe with a signed token) stay plain
# ASCII instead of being folded into encoded words that mail clients would not parse
POLICY = policy.SMTP.clone(max_line_length=998)
# quoted-printable body lines: RFC 2045's 76 characters
BODY_POLICY = policy.SMTP.clone(max_line_length=76)

SIGNED_HEADERS = (
    "From",
    "Reply-To",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "MIME-Version",
    "Content-Type",
)
"""What a DKIM signature covers, when present: the identity of the message and the
unsubscribe headers (RFC 8058 asks for List-Unsubscribe and List-Unsubscribe-Post to be
signed for one-click to count)."""

_BODY_OPEN = re.compile(r"<body\b[^>]*>", re.IGNORECASE)
_HTML_OPEN = re.compile(r"<html\b", re.IGNORECASE)
_PREHEADER = (
    '<div style="display:none;max-height:0;max-width:0;overflow:hidden;mso-hide:all">{text}</div>'
)
_DOCUMENT = (
    '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n</head>\n<body>\n{body}\n'
    "</body>\n</html>\n"
)


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    private_key: bytes
    """PEM (PKCS#1 or PKCS#8) RSA or Ed25519 key."""

    @classmethod
    def load(cls, domain: str, selector: str, key: str) -> DkimKey:
        """`key` is the PEM text itself or the path of a file holding it."""
        text = key.strip()
        pem = text.encode() if text.startswith("-----BEGIN") else Path(text).read_bytes()
        return cls(domain=domain, selector=selector, private_key=pem)


def domain_of(address: str) -> str:
    """The domain of an address like `Acme <hello@acme.example>` ('' when there is none)."""
    return parseaddr(address)[1].rpartition("@")[2].lower()


def build(message: EmailMessage) -> Mime:
    mime = Mime(policy=POLICY)
    mime["From"] = message.from_address
    if message.reply_to:
        mime["Reply-To"] = message.reply_to
    mime["To"] = message.to
    mime["Subject"] = message.subject
    mime["Date"] = formatdate(localtime=False, usegmt=True)
    for name, value in message.headers.items():
        mime[name] = value
    if "Message-ID" not in mime:
        mime["Message-ID"] = make_msgid(domain=domain_of(message.from_address) or None)
    # encode the parts under the body's line limit, then serialise under the headers' one
    mime.policy = BODY_POLICY
    mime.set_content(message.text or " ", cte="quoted-printable")
    html = html_document(message.html, message.preheader)
    mime.add_alternative(html, subtype="html", cte="quoted-printable")
    mime.policy = POLICY
    return mime


def html_document(html: str, preheader: str | None = None) -> str:
    """A whole HTML document (a template may be a fragment) with the preheader in it."""
    if not _HTML_OPEN.search(html):
        html = _DOCUMENT.format(body=html.strip())
    if preheader:
        hidden = _PREHEADER.format(text=html_lib.escape(preheader))
        opened = _BODY_OPEN.search(html)
        at = opened.end() if opened else 0
        html = f"{html[:at]}\n{hidden}{html[at:]}"
    return html


def to_bytes(mime: Mime, signing: DkimKey | None = None, *, utf8: bool = False) -> bytes:
    """The message as it goes on the wire (CRLF lines), with a DKIM-Signature on top when a key
    is given. `utf8`: headers in raw UTF-8 (RFC 6532), for non-ASCII addresses over SMTPUTF8."""
    raw = mime.as_bytes(policy=POLICY.clone(utf8=True) if utf8 else POLICY)
    if signing is None:
        return raw
    present = [name.encode() for name in SIGNED_HEADERS if name in mime]
    signature = dkim.sign(
        raw,
        signing.selector.encode(),
        signing.domain.encode(),
        signing.private_key,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=present,
    )
    return bytes(signature) + raw
