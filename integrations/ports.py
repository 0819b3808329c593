"""The contracts every provider keeps: one per channel, two kinds of failure.

Core code talks to these and never imports smtplib, twilio or httpx. A provider raises
`TemporaryError` (worth retrying: SMTP 4xx, a dropped connection, Twilio 429/5xx) or
`PermanentError` (not: SMTP 5xx, Twilio 21610/21211); only the task decides how often to retry.
A refused credential (`CredentialsRefused`, 401/403) holds the whole provider instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from worker.kit.errors import NurtureError


class ProviderError(NurtureError):
    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class TemporaryError(ProviderError):
    """Try again later; nothing was accepted."""


class RateLimited(TemporaryError):
    """A 429: try again after `retry_after` seconds (the provider's Retry-After), if it said."""

    def __init__(
        self, message: str, *, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class CredentialsRefused(RateLimited):
    """A 401 or 403: the provider refused our credentials, which says nothing about the
    message. The provider is held for `retry_after` seconds (HOLD unless given: no calls to
    it, then one probe) while an operator fixes the credentials; like a rate limit, the wait
    spends no attempt, so a step waits (pending with a due time) instead of failing."""

    HOLD = 900.0
    """Seconds a provider that refused our credentials is left alone before one probe."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "unknown",
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message, code=code, retry_after=self.HOLD if retry_after is None else retry_after
        )
        self.provider = provider


class DeliveryUncertain(NurtureError):
    """The provider may have accepted the message: the request went out and no answer came
    back (a timeout after SMTP's end of data, a dropped HTTP response). Neither retried nor
    failed: not a ProviderError on purpose, so the step stays handed over, the sweeper marks
    it `unknown`, and it is never sent twice."""


class PermanentError(ProviderError):
    """Do not try again. `suppress` names the reason to stop contacting the address, if any."""

    def __init__(self, message: str, *, code: str | None = None, suppress: str | None = None):
        super().__init__(message, code=code)
        self.suppress = suppress


@dataclass(frozen=True)
class SendResult:
    provider_message_id: str
    segments: int | None = None


@dataclass(frozen=True)
class EmailMessage:
    to: str
    subject: str
    html: str
    text: str
    from_address: str
    reply_to: str | None = None
    preheader: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    """Message-ID, List-Unsubscribe, X-Nurture-Step-Run …"""


@dataclass(frozen=True)
class TextMessage:
    to: str
    channel: str  # sms | whatsapp
    body: str | None = None
    content_sid: str | None = None
    variables: dict[str, str] | None = None
    reference: str = ""
    """The step run's id: an idempotency handle where the provider has one."""


@dataclass(frozen=True)
class CrmTaskRequest:
    email: str | None
    subject: str
    body: str | None
    priority: str
    task_type: str
    due_after_seconds: int
    reference: str


@dataclass(frozen=True)
class PushResult:
    """What a CRM made of one push of changes; a contact it does not name was applied."""

    rejected: dict[str, str] = field(default_factory=dict)
    """lead id → why the CRM refused the contact's changes (a 4xx): recorded, never retried."""
    deferred: dict[str, str] = field(default_factory=dict)
    """lead id → a temporary failure (429, 5xx, no connection): retried later, in order."""
    retry_after: float | None = None
    """Seconds the CRM asked us to wait (Retry-After) before the deferred ones."""


class EmailSender(Protocol):
    def send(self, message: EmailMessage) -> SendResult: ...


class TextSender(Protocol):
    def send(self, message: TextMessage) -> SendResult: ...


class Crm(Protocol):
    def create_task(self, task: CrmTaskRequest) -> SendResult: ...

    def push(self, changes: list[dict[str, Any]]) -> PushResult:
        """Tell the CRM `changes` (worker.crm.service's JSON, in order per contact): raise
        TemporaryError when none were applied, name the contacts that failed otherwise."""
        ...
