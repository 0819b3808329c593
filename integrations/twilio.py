"""SMS and WhatsApp over Twilio's Messages API, with the official `twilio` client.

429 (20429), 5xx and a connection that never reached Twilio are temporary; 21610 (the
recipient sent STOP) and 21211/21614 (no number that can receive texts) are permanent and
suppress the channel; any other 4xx is permanent. A 401 or 403 (`CredentialsRefused`) holds
Twilio in this process: no call for 15 minutes, then one probe, and an ERROR in the log each
time it is refused. The client never retries: the task decides. A request that reached Twilio
without an answer may have been accepted, so it is neither retried nor failed here
(`DeliveryUncertain`): the step stays handed over and the sweeper marks it `unknown`, never
sent twice. Every message names its step run in its StatusCallback (`?step_run=…`), and
`sent_texts` lists what Twilio sent to a number, so an `unknown` text can be confirmed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import ConnectTimeout, RequestException
from twilio.base.exceptions import TwilioException  # type: ignore[import-untyped]
from twilio.http.http_client import TwilioHttpClient  # type: ignore[import-untyped]
from twilio.rest import Client  # type: ignore[import-untyped]
from urllib3.exceptions import NewConnectionError

from integrations.ports import (
    CredentialsRefused,
    DeliveryUncertain,
    PermanentError,
    SendResult,
    TemporaryError,
    TextMessage,
)

if TYPE_CHECKING:
    from worker.config import Settings

log = logging.getLogger("nurture")
STATUS_CALLBACK_PATH = "/v1/webhooks/twilio/status"
STEP_RUN = "step_run"
"""The StatusCallback's query parameter naming the step run a message was sent for."""
SUPPRESSING = {21610: "stop", 21211: "invalid_number", 21614: "invalid_number"}
"""Twilio error codes that mean: stop texting this number on this channel (the reason kept)."""
TOO_MANY_REQUESTS = 20429
OUTSIDE_WHATSAPP_WINDOW = 63016
REFUSED_CREDENTIALS = {401, 403}
LISTED = 50
"""Messages asked for per lookup: a number gets a handful of texts a day from us."""


@dataclass(frozen=True)
class SentText:
    """A message Twilio sent, as its Messages list shows it."""

    sid: str
    to: str
    body: str | None
    status: str
    sent_at: datetime | None
    segments: int | None


@dataclass(frozen=True)
class TwilioSettings:
    account_sid: str
    auth_token: str
    from_number: str | None = None
    messaging_service_sid: str | None = None
    whatsapp_from: str | None = None
    status_callback: str | None = None
    api_base: str | None = None
    """Tests point the client at a contract mock or a fake (NURTURE_TWILIO_API_BASE)."""
    timeout: float = 30.0


class TwilioSender:
    def __init__(
        self,
        options: TwilioSettings,
        client: Any = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self.clock = clock
        self.held_until: float | None = None
        """After a refused credential: no call to Twilio before this (on `clock`)."""
        self.client = client or Client(
            options.account_sid,
            options.auth_token,
            http_client=TwilioHttpClient(timeout=options.timeout),
        )
        if options.api_base:
            # twilio 9 has no base-URL option; this attribute is what its requests are built on
            self.client.api.base_url = options.api_base.rstrip("/")

    @classmethod
    def from_settings(cls, config: Settings) -> TwilioSender:
        """Refuses a configuration that could send nothing, so the process does not start."""
        token = config.twilio_auth_token.get_secret_value() if config.twilio_auth_token else ""
        if not config.twilio_account_sid or not token:
            raise ValueError(
                "NURTURE_SMS_BACKEND=twilio needs NURTURE_TWILIO_ACCOUNT_SID and "
                "NURTURE_TWILIO_AUTH_TOKEN"
            )
        senders = (
            config.twilio_from,
            config.twilio_messaging_service_sid,
            config.twilio_whatsapp_from,
        )
        if not any(senders):
            raise ValueError(
                "NURTURE_SMS_BACKEND=twilio needs a sender: NURTURE_TWILIO_FROM, "
                "NURTURE_TWILIO_MESSAGING_SERVICE_SID or NURTURE_TWILIO_WHATSAPP_FROM"
            )
        return cls(
            TwilioSettings(
                account_sid=config.twilio_account_sid,
                auth_token=token,
                from_number=config.twilio_from,
                messaging_service_sid=config.twilio_messaging_service_sid,
                whatsapp_from=config.twilio_whatsapp_from,
                status_callback=config.public_url.rstrip("/") + STATUS_CALLBACK_PATH,
                api_base=config.twilio_api_base,
            )
        )

    def send(self, message: TextMessage) -> SendResult:
        parameters = self.parameters(message)
        self._check_hold()
        try:
            created = self.client.messages.create(**parameters)
        except TwilioException as exc:
            raise self._refused(rest_error(exc)) from exc
        except RequestException as exc:
            if never_reached(exc):
                raise TemporaryError(f"Twilio unreachable: {exc}", code="connection") from exc
            raise DeliveryUncertain(f"no answer from Twilio after sending: {exc}") from exc
        return SendResult(provider_message_id=str(created.sid), segments=segments(created))

    def parameters(self, message: TextMessage) -> dict[str, Any]:
        """What `messages.create` receives: the sender, the address, the body or template."""
        options = self.options
        found: dict[str, Any] = {"to": message.to}
        if message.channel == "whatsapp":
            found["to"] = whatsapp_address(message.to)
            if options.whatsapp_from:
                found["from_"] = whatsapp_address(options.whatsapp_from)
            elif options.messaging_service_sid:
                found["messaging_service_sid"] = options.messaging_service_sid
            else:
                raise PermanentError(
                    "no WhatsApp sender: set NURTURE_TWILIO_WHATSAPP_FROM", code="no_sender"
                )
        elif options.messaging_service_sid:
            # a messaging service picks the number (and keeps its opt-out lists) itself
            found["messaging_service_sid"] = options.messaging_service_sid
        elif options.from_number:
            found["from_"] = options.from_number
        else:
            raise PermanentError(
                "no SMS sender: set NURTURE_TWILIO_FROM or NURTURE_TWILIO_MESSAGING_SERVICE_SID",
                code="no_sender",
            )
        if message.content_sid:
            found["content_sid"] = message.content_sid
            if message.variables:
                found["content_variables"] = json.dumps(message.variables, ensure_ascii=False)
        else:
            found["body"] = message.body or ""
        if options.status_callback:
            found["status_callback"] = status_callback(options.status_callback, message.reference)
        return found

    def sent_texts(self, to: str, since: datetime, until: datetime) -> list[SentText]:
        """What Twilio sent to `to` (a number, or `whatsapp:` one) between `since` and `until`,
        by its date sent: Twilio filters by day, so the instants are checked here."""
        self._check_hold()
        first_day = since.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        after_day = until.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        try:
            # one page: a number gets a handful of texts a day from us, and paging on would
            # turn one look into many requests
            listed = self.client.messages.page(
                to=to,
                date_sent_after=first_day,
                date_sent_before=after_day + timedelta(days=1),
                page_size=LISTED,
            )
        except TwilioException as exc:
            raise self._refused(rest_error(exc)) from exc
        except RequestException as exc:
            raise TemporaryError(f"Twilio unreachable: {exc}", code="connection") from exc
        found = []
        for item in listed:
            sent_at = item.date_sent
            if str(item.direction or "").startswith("inbound"):
                continue
            if sent_at is None or not since <= sent_at <= until:
                continue
            found.append(
                SentText(
                    sid=str(item.sid),
                    to=str(item.to),
                    body=item.body,
                    status=str(item.status or ""),
                    sent_at=sent_at,
                    segments=segments(item),
                )
            )
        return found

    def _check_hold(self) -> None:
        """Refuse at once while Twilio is held: the credentials are still being fixed."""
        if self.held_until is None:
            return
        left = self.held_until - self.clock()
        if left <= 0:
            self.held_until = None  # the probe: one call goes out
            return
        raise CredentialsRefused(
            f"Twilio refused our credentials; held for {left:.0f} s more",
            provider="twilio",
            code="held",
            retry_after=left,
        )

    def _refused(self, exc: TemporaryError | PermanentError) -> TemporaryError | PermanentError:
        """A refused credential holds Twilio in this process and is logged as the alert."""
        if isinstance(exc, CredentialsRefused):
            hold = exc.retry_after or CredentialsRefused.HOLD
            self.held_until = self.clock() + hold
            log.error("Twilio refused our credentials (%s): texts wait; no call to Twilio for "
                      "%.0f s, then one probe. Fix NURTURE_TWILIO_ACCOUNT_SID / "
                      "NURTURE_TWILIO_AUTH_TOKEN", exc, hold)  # fmt: skip
        return exc


def status_callback(url: str, reference: str) -> str:
    """The StatusCallback for one message: it names the step run, so a late callback can
    confirm a step left `unknown` (Twilio signs the whole URL, the query included)."""
    if not reference:
        return url
    return f"{url}{'&' if '?' in url else '?'}{urlencode({STEP_RUN: reference})}"


def whatsapp_address(number: str) -> str:
    number = number.strip()
    return number if number.lower().startswith("whatsapp:") else f"whatsapp:{number}"


def segments(created: Any) -> int | None:
    """Twilio gives `num_segments` as text ("2"); 0 or nothing means not known yet."""
    try:
        count = int(created.num_segments)
    except (TypeError, ValueError):
        return None
    return count if count > 0 else None


def rest_error(exc: Any) -> TemporaryError | PermanentError:
    """A refusal from the API as one of the two kinds of failure."""
    status = _int(getattr(exc, "status", None))
    code = _int(getattr(exc, "code", None)) or status
    text = f"Twilio {status} (error {code}): {getattr(exc, 'msg', None) or exc}"
    label = str(code or status or "twilio")
    if status == 429 or code == TOO_MANY_REQUESTS or (status is not None and status >= 500):
        return TemporaryError(text, code=label)
    if status in REFUSED_CREDENTIALS:
        # bad credentials say nothing about the message: Twilio is held while they are fixed
        return CredentialsRefused(text, provider="twilio", code=label)
    if code in SUPPRESSING:
        return PermanentError(text, code=label, suppress=SUPPRESSING[code])
    if code == OUTSIDE_WHATSAPP_WINDOW:
        return PermanentError(text, code="whatsapp_window")
    return PermanentError(text, code=label)


def never_reached(exc: RequestException) -> bool:
    """True when the request cannot have reached Twilio: the connection was never made."""
    if isinstance(exc, ConnectTimeout):
        return True
    if isinstance(exc, RequestsConnectionError):
        cause = exc.args[0] if exc.args else None
        return isinstance(getattr(cause, "reason", cause), NewConnectionError)
    return False


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
