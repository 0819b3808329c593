"""The email a step hands to the provider: sender, parts and headers (SPEC §3).

One place, so the worker, `nurture preview --send-to` and the spam test send the same thing.
Headers: a Message-ID fixed per step run (a retried send is recognisably the same message),
`X-Nurture-Step-Run`, and on marketing email `List-Unsubscribe` with an HTTPS and a mailto
address plus `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 2369, RFC 8058).
Transactional templates and internal alerts (`notify`) carry no unsubscribe headers.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from integrations.mime import domain_of
from integrations.ports import EmailMessage
from worker.config import Settings
from worker.kit.signing import unsubscribe_token, unsubscribe_url
from worker.sending.compose import Composed
from worker.sending.reply_tokens import reply_address

MAILTO_SUBJECT = "unsubscribe"
_MAILTO_TOKEN = re.compile(rf"\b{MAILTO_SUBJECT}\s+([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)")


def message_domain(config: Settings) -> str:
    """The right-hand side of Message-IDs: the DKIM domain, else EMAIL_FROM's (when it is a
    real one), else `nurture`."""
    domain = config.dkim_domain or domain_of(config.email_from)
    return domain if "." in domain else "nurture"


def message_id(config: Settings, reference: str) -> str:
    return f"<{reference}@{message_domain(config)}>"


def mailto_address(config: Settings) -> str | None:
    """NURTURE_UNSUBSCRIBE_MAILTO, else `unsubscribe@` EMAIL_FROM's domain when the inbox
    poller reads a mailbox (that address must deliver into it); None when it is `off`, when
    no mailbox is read, or when the domain is not one mail could reach (`localhost`): an
    unsubscribe address nobody reads would be a promise broken."""
    if config.unsubscribe_mailto:
        wanted = config.unsubscribe_mailto.strip()
        return None if wanted.lower() in ("off", "none", "") else wanted
    if not config.imap_host:
        return None
    domain = domain_of(config.email_from)
    return f"unsubscribe@{domain}" if "." in domain else None


def list_unsubscribe(config: Settings, lead_id: str) -> dict[str, str]:
    """The List-Unsubscribe headers of a marketing email to `lead_id`. The mailto's subject
    carries the same signed token as the HTTPS link (`unsubscribe <token>`): whoever reads that
    mailbox finds the lead with `mailto_token` and `tokens.verify`."""
    links = [f"<{unsubscribe_url(config, lead_id, 'email')}>"]
    mailbox = mailto_address(config)
    if mailbox:
        token = unsubscribe_token(config, lead_id, "email")
        links.append(f"<mailto:{mailbox}?subject={quote(f'{MAILTO_SUBJECT} {token}')}>")
    return {
        "List-Unsubscribe": ", ".join(links),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def mailto_token(subject: str) -> str | None:
    """The token in the subject of a mail sent to the mailto List-Unsubscribe address."""
    found = _MAILTO_TOKEN.search(subject)
    return found.group(1) if found else None


def email_message(
    config: Settings, composed: Composed, *, reference: str, lead_id: str
) -> EmailMessage:
    """The message for a composed `email` or `notify` step run."""
    email = composed.email
    assert email is not None
    headers = {"Message-ID": message_id(config, reference), "X-Nurture-Step-Run": reference}
    if composed.channel == "email" and not email.transactional:
        headers.update(list_unsubscribe(config, lead_id))
    return EmailMessage(
        to=composed.to or "",
        subject=email.subject,
        html=email.html,
        text=email.text,
        from_address=email.from_address or config.email_from,
        reply_to=email.reply_to or reply_address(config, reference, composed.channel),
        preheader=email.preheader,
        headers=headers,
    )
