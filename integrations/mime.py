"""Build the RFC 5322 message for an `EmailMessage`: multipart/alternative, text then HTML."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage as Mime
from email.utils import formatdate

from integrations.ports import EmailMessage

# RFC 5322's line limit: long header values (List-Unsubscribe with a signed token) stay plain
# ASCII instead of being folded into encoded words that mail clients would not parse
POLICY = policy.SMTP.clone(max_line_length=998)


def build(message: EmailMessage) -> Mime:
    mime = Mime(policy=POLICY)
    mime["From"] = message.from_address
    mime["To"] = message.to
    mime["Subject"] = message.subject
    mime["Date"] = formatdate(localtime=False, usegmt=True)
    if message.reply_to:
        mime["Reply-To"] = message.reply_to
    for name, value in message.headers.items():
        mime[name] = value
    mime.set_content(message.text or " ")
    mime.add_alternative(message.html, subtype="html")
    return mime
