"""Email over SMTP: one connection per process, reused, reopened after a drop or a 421.

4xx replies and broken connections are temporary; 5xx replies are permanent, and a
recipient refused with 550/551/553 suppresses the address.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from integrations import mime
from integrations.ports import EmailMessage, PermanentError, SendResult, TemporaryError

if TYPE_CHECKING:
    from worker.config import Settings

SUPPRESSING = {550, 551, 553}


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    use_ssl: bool = False
    timeout: float = 30.0


class SmtpSender:
    def __init__(self, options: SmtpSettings) -> None:
        self.options = options
        self._connection: smtplib.SMTP | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, config: Settings) -> SmtpSender:
        return cls(
            SmtpSettings(
                host=config.smtp_host,
                port=config.smtp_port,
                username=config.smtp_username,
                password=config.smtp_password.get_secret_value() if config.smtp_password else None,
                starttls=config.smtp_starttls,
                use_ssl=config.smtp_ssl,
            )
        )

    def send(self, message: EmailMessage) -> SendResult:
        built = mime.build(message)
        with self._lock:
            try:
                connection = self._connect()
                refused = connection.send_message(built)
            except smtplib.SMTPRecipientsRefused as exc:
                code, reply = next(iter(exc.recipients.values()))
                raise _error(code, reply) from exc
            except smtplib.SMTPResponseException as exc:
                if exc.smtp_code == 421:
                    self._drop()
                raise _error(exc.smtp_code, exc.smtp_error) from exc
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                self._drop()
                raise TemporaryError(f"SMTP connection failed: {exc}", code="connection") from exc
        if refused:
            code, reply = next(iter(refused.values()))
            raise _error(code, reply)
        return SendResult(provider_message_id=str(built["Message-ID"] or ""))

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _connect(self) -> smtplib.SMTP:
        if self._connection is not None:
            try:
                if self._connection.noop()[0] == 250:
                    return self._connection
            except (smtplib.SMTPException, OSError):
                pass
            self._drop()
        options = self.options
        if options.use_ssl:
            connection: smtplib.SMTP = smtplib.SMTP_SSL(
                options.host, options.port, timeout=options.timeout,
                context=ssl.create_default_context(),
            )  # fmt: skip
        else:
            connection = smtplib.SMTP(options.host, options.port, timeout=options.timeout)
            if options.starttls:
                connection.starttls(context=ssl.create_default_context())
        if options.username and options.password:
            connection.login(options.username, options.password)
        self._connection = connection
        return connection

    def _drop(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(OSError):
                self._connection.close()
        self._connection = None


def _error(code: int, reply: bytes | str) -> TemporaryError | PermanentError:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    message = f"SMTP {code}: {text}"
    if 400 <= code < 500:
        return TemporaryError(message, code=str(code))
    return PermanentError(
        message, code=str(code), suppress="bounced" if code in SUPPRESSING else None
    )
