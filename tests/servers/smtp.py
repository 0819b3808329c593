"""aiosmtpd servers for the tests: `Sink`, the parsed messages the `smtp_sink` fixture keeps,
and for the SMTP tests a sink that keeps the raw bytes and the connection each message came
over, plain, STARTTLS with login, or implicit TLS, with a throwaway CA."""

from __future__ import annotations

import asyncio
import email
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.helpers import free_port


@dataclass
class Sink:
    """Messages as the SMTP server received them, parsed; `reply` scripts the next answers."""

    messages: list[Message] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            if self.replies:
                return self.replies.pop(0)
            self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def step_runs(self) -> list[str]:
        with self.lock:
            return [str(m["X-Nurture-Step-Run"]) for m in self.messages]


@dataclass
class Arrived:
    raw: bytes
    peer: tuple[str, int]
    """The client's address and port: one per connection."""
    mail_from: str
    rcpt_tos: list[str]

    @property
    def message(self) -> Message:
        return email.message_from_bytes(self.raw)


@dataclass
class RawSink:
    """Keeps what arrived; `replies`, `rcpt` and `mail` script the answers to the next DATA,
    RCPT TO and MAIL FROM commands; `data_delay` makes the answer to DATA late."""

    arrived: list[Arrived] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    rcpt: list[str] = field(default_factory=list)
    mail: list[str] = field(default_factory=list)
    peers: list[tuple[str, int]] = field(default_factory=list)
    data_delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self.lock:
            if self.mail:
                return self.mail.pop(0)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self.lock:
            if self.rcpt:
                return self.rcpt.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        with self.lock:
            if session.peer not in self.peers:
                self.peers.append(session.peer)
            if self.replies:
                return self.replies.pop(0)
            self.arrived.append(
                Arrived(envelope.content, session.peer, envelope.mail_from, envelope.rcpt_tos)
            )
        return "250 OK"

    @property
    def messages(self) -> list[Message]:
        with self.lock:
            return [found.message for found in self.arrived]


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path


def make_certificates(folder: Path) -> Certificates:
    """A CA and a certificate for 127.0.0.1 and localhost signed by it (openssl)."""
    ca_key, ca = folder / "ca.key", folder / "ca.pem"
    key, request, cert = folder / "server.key", folder / "server.csr", folder / "server.pem"
    extensions = folder / "san.cnf"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*argv: str) -> None:
        subprocess.run(["openssl", *argv], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out",
        str(ca), "-days", "2", "-subj", "/CN=Nurture test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(request),
        "-subj", "/CN=localhost")  # fmt: skip
    run("x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(extensions))  # fmt: skip
    return Certificates(ca=ca, cert=cert, key=key)


def server_tls(certificates: Certificates) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certificates.cert), str(certificates.key))
    return context


def password_checker(username: str, password: str) -> Any:
    def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        good = isinstance(data, LoginPassword) and (data.login, data.password) == (
            username.encode(),
            password.encode(),
        )
        return AuthResult(success=good, handled=False)

    return check


@contextmanager
def smtp_server(sink: RawSink, **options: Any) -> Iterator[int]:
    """An aiosmtpd server on a free loopback port; `options` go to Controller and SMTP
    (`ssl_context`, `tls_context`, `require_starttls`, `authenticator`, `timeout` …)."""
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()
