"""Email over SMTP: one connection per process, reused, reopened after a drop or a 421.

4xx replies, timeouts and broken connections are temporary; 5xx replies are permanent, and a
recipient the server says does not exist (550/551/553, or an enhanced status 5.1.x / 5.2.1)
suppresses the address. A relay that closed the reused connection while it sat idle (a drop,
or a 421 before the transaction) is noticed at MAIL FROM, before anything of the message was
sent, and the message goes out once more over a new connection.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import ssl
import threading
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import TYPE_CHECKING

from integrations import mime
from integrations.ports import (
    DeliveryUncertain,
    EmailMessage,
    PermanentError,
    SendResult,
    TemporaryError,
)

if TYPE_CHECKING:
    from worker.config import Settings

SUPPRESSING = {550, 551, 553}
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_GONE = ("5.1.", "5.2.1")
"""Enhanced status codes that mean the mailbox is not there (bad address, no such domain,
mailbox disabled); 5.7.x (policy, spam) or 5.2.2 (mailbox full) are not the address's fault."""


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    use_ssl: bool = False
    timeout: float = 30.0
    ca_file: Path | None = None
    dkim: mime.DkimKey | None = None


class SmtpSender:
    def __init__(self, options: SmtpSettings) -> None:
        self.options = options
        self._connection: smtplib.SMTP | None = None
        self._lock = threading.Lock()
        self.connections_opened = 0

    @classmethod
    def from_settings(cls, config: Settings) -> SmtpSender:
        dkim = None
        if config.dkim_domain and config.dkim_selector and config.dkim_private_key:
            dkim = mime.DkimKey.load(
                config.dkim_domain,
                config.dkim_selector,
                config.dkim_private_key.get_secret_value(),
            )
        return cls(
            SmtpSettings(
                host=config.smtp_host,
                port=config.smtp_port,
                username=config.smtp_username,
                password=config.smtp_password.get_secret_value() if config.smtp_password else None,
                starttls=config.smtp_starttls,
                use_ssl=config.smtp_ssl,
                timeout=config.smtp_timeout,
                ca_file=config.smtp_ca_file,
                dkim=dkim,
            )
        )

    def send(self, message: EmailMessage) -> SendResult:
        sender = parseaddr(message.from_address)[1]
        international = not (sender.isascii() and message.to.isascii())
        built = mime.build(message)
        raw = mime.to_bytes(built, self.options.dkim, utf8=international)
        with self._lock:
            try:
                self._transmit(sender, message.to, raw, international=international)
            except smtplib.SMTPResponseException as exc:  # DATA itself refused
                if self._connection is not None:
                    self._abandon(self._connection, exc.smtp_code)
                raise _error(exc.smtp_code, exc.smtp_error, stage="data") from exc
            except (smtplib.SMTPException, OSError) as exc:
                self._drop()
                code = "timeout" if _timed_out(exc) else "connection"
                raise TemporaryError(f"SMTP {code}: {exc!r}", code=code) from exc
        return SendResult(provider_message_id=str(built["Message-ID"]))

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                with contextlib.suppress(smtplib.SMTPException, OSError):
                    self._connection.quit()
            self._drop()

    # -- one transaction ---------------------------------------------------------------------

    def _transmit(self, sender: str, recipient: str, raw: bytes, *, international: bool) -> None:
        connection = self._begin(sender, international=international)
        code, reply = connection.rcpt(recipient)
        if code not in (250, 251):
            self._abandon(connection, code)
            raise _error(code, reply, stage="rcpt")
        try:
            code, reply = connection.data(raw)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            # the message may be queued already: a retry could deliver it twice (SPEC §8)
            self._drop()
            raise DeliveryUncertain(f"SMTP: no answer to the message's data: {exc!r}") from exc
        if code != 250:
            self._abandon(connection, code)
            raise _error(code, reply, stage="data")

    def _begin(self, sender: str, *, international: bool) -> smtplib.SMTP:
        """A connection on which MAIL FROM was accepted. A reused connection the relay closed
        meanwhile (a drop, or its idle-timeout 421) is replaced once: nothing was sent on it."""
        reused = self._connection is not None
        connection = self._open()
        try:
            code, reply = self._mail(connection, sender, international)
        except (smtplib.SMTPServerDisconnected, OSError):
            if not reused:
                raise
            code, reply = 421, b"connection closed while idle"
        if code == 421 and reused:
            self._drop()
            connection = self._open()
            code, reply = self._mail(connection, sender, international)
        if code != 250:
            self._abandon(connection, code)
            raise _error(code, reply, stage="mail")
        return connection

    @staticmethod
    def _mail(connection: smtplib.SMTP, sender: str, international: bool) -> tuple[int, bytes]:
        if not international:
            return connection.mail(sender)
        if not connection.has_extn("smtputf8"):
            raise PermanentError(
                "the relay does not take non-ASCII addresses (no SMTPUTF8)", code="smtputf8"
            )
        return connection.mail(sender, ["SMTPUTF8", "BODY=8BITMIME"])

    def _abandon(self, connection: smtplib.SMTP, code: int) -> None:
        """After a refused transaction: a 421 closes the connection, anything else resets it
        for the next message."""
        if code == 421:
            self._drop()
            return
        try:
            connection.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    # -- the connection ------------------------------------------------------------------------

    def _open(self) -> smtplib.SMTP:
        if self._connection is not None:
            return self._connection
        options = self.options
        try:
            if options.use_ssl:
                connection: smtplib.SMTP = smtplib.SMTP_SSL(
                    options.host, options.port, timeout=options.timeout, context=self._tls()
                )
            else:
                connection = smtplib.SMTP(options.host, options.port, timeout=options.timeout)
        except smtplib.SMTPResponseException as exc:  # a greeting other than 220
            raise _unavailable(exc) from exc
        try:
            connection.ehlo_or_helo_if_needed()
            if options.starttls and not options.use_ssl:
                connection.starttls(context=self._tls())
                connection.ehlo_or_helo_if_needed()
            if options.username and options.password:
                connection.login(options.username, options.password)
        except smtplib.SMTPAuthenticationError as exc:
            _close(connection)
            # the relay refusing our credentials says nothing about the message: the step
            # retries while someone fixes the settings
            raise TemporaryError(
                f"SMTP login refused: {exc.smtp_code} {_text(exc.smtp_error)}", code="auth"
            ) from exc
        except smtplib.SMTPResponseException as exc:  # EHLO or STARTTLS refused
            _close(connection)
            raise _unavailable(exc) from exc
        except BaseException:
            _close(connection)
            raise
        self._connection = connection
        self.connections_opened += 1
        return connection

    def _tls(self) -> ssl.SSLContext:
        """Verifying, always; a CA file adds to the system's trust (a private relay, tests)."""
        context = ssl.create_default_context()
        if self.options.ca_file is not None:
            context.load_verify_locations(cafile=str(self.options.ca_file))
        return context

    def _drop(self) -> None:
        if self._connection is not None:
            _close(self._connection)
        self._connection = None


def _close(connection: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        connection.close()


def _unavailable(exc: smtplib.SMTPResponseException) -> TemporaryError:
    """The relay would not take a session at all: its problem or our settings', never the
    message's, so the step waits and retries."""
    text = f"SMTP relay unavailable: {exc.smtp_code} {_text(exc.smtp_error)}"
    return TemporaryError(text, code=str(exc.smtp_code))


def _timed_out(exc: BaseException | None) -> bool:
    """smtplib reports a read that timed out as a disconnection: look at what it wraps."""
    while exc is not None:
        if isinstance(exc, TimeoutError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)


def _error(code: int, reply: bytes | str, *, stage: str) -> TemporaryError | PermanentError:
    """A refusal at MAIL FROM is about us, never the recipient: it does not suppress."""
    text = _text(reply)
    message = f"SMTP {code}: {text}"
    if code < 500:
        return TemporaryError(message, code=str(code))
    enhanced = _ENHANCED.match(text)
    if stage == "mail":
        gone = False
    elif enhanced is not None:
        gone = enhanced.group(0).strip().startswith(_GONE)
    else:
        gone = code in SUPPRESSING
    return PermanentError(message, code=str(code), suppress="bounced" if gone else None)
