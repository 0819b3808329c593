"""Reading a mailbox over IMAP (IMAPClient): log in over TLS (implicit, or STARTTLS), select a
folder, list what arrived after a UID, fetch it without marking it read, mark it processed by
a keyword or a move, and wait for news with IDLE (RFC 2177). Never deletes.

Every failure of the server or the connection is an `ImapError`: the poller stops and the next
run starts again from where the database says it stopped. IMAPClient ships no type hints, so
this module is the narrow typed wrapper around it.
"""

from __future__ import annotations

import contextlib
import imaplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from imapclient import IMAPClient
from imapclient.exceptions import CapabilityError

from worker.kit.errors import NurtureError

if TYPE_CHECKING:
    from worker.config import Settings

Security = Literal["ssl", "starttls", "none"]
FAILURES = (OSError, imaplib.IMAP4.error)
"""What IMAPClient and the network raise: socket and TLS errors, refusals, protocol errors."""
NEWS = {b"EXISTS", b"RECENT"}
"""Untagged responses during IDLE that mean a message arrived."""


class ImapError(NurtureError):
    """The server refused a command, or the connection failed."""


@dataclass(frozen=True)
class ImapSettings:
    host: str
    port: int
    username: str
    password: str
    security: Security = "ssl"
    """ssl: implicit TLS (IMAPS); starttls: upgrade a plain connection before logging in, or
    refuse to log in; none: plain text (loopback and tests only)."""
    folder: str = "INBOX"
    timeout: float = 30.0
    ca_file: Path | None = None
    """Extra CAs to trust for the server's certificate (a private CA; tests)."""

    @property
    def name(self) -> str:
        """Where the poller's position is kept: the same account and folder, the same name."""
        return f"{self.username}@{self.host}:{self.port}/{self.folder}"


def security_of(config: Settings) -> Security:
    """NURTURE_IMAP_SECURITY, else the older NURTURE_IMAP_SSL (true: ssl, false: none)."""
    if config.imap_security is not None:
        return config.imap_security
    return "ssl" if config.imap_ssl else "none"


def settings_from(config: Settings) -> ImapSettings | None:
    """The mailbox NURTURE_IMAP_* names, or None when no host is set."""
    if not config.imap_host:
        return None
    security = security_of(config)
    return ImapSettings(
        host=config.imap_host,
        port=config.imap_port or (993 if security == "ssl" else 143),
        username=config.imap_username or "",
        password=config.imap_password.get_secret_value() if config.imap_password else "",
        security=security,
        folder=config.imap_folder,
        ca_file=config.imap_ca_file,
    )


class ImapMailbox:
    """One logged-in connection with the folder selected read-write; use it as a context
    manager (`with ImapMailbox(options) as mailbox:`)."""

    def __init__(self, options: ImapSettings) -> None:
        self.options = options
        self._client: Any = None  # IMAPClient: untyped, kept inside this class
        self._created: set[str] = set()
        self.capabilities: set[str] = set()
        self.uidvalidity = 0

    def __enter__(self) -> ImapMailbox:
        options = self.options
        try:
            client = IMAPClient(
                options.host,
                options.port,
                ssl=options.security == "ssl",
                ssl_context=self._tls() if options.security == "ssl" else None,
                timeout=options.timeout,
            )
        except FAILURES as exc:
            raise ImapError(f"cannot connect to {options.host}:{options.port}: {exc}") from exc
        self._client = client
        try:
            if options.security == "starttls":
                self._starttls(client)
            client.login(options.username, options.password)
            # servers list more after login than in their greeting (Dovecot: MOVE, UIDPLUS)
            found = client.capabilities()
            self.capabilities = {_text(c).upper() for c in found}
            selected = client.select_folder(options.folder)
            self.uidvalidity = _uidvalidity(selected)
            self._arrived_meanwhile()  # the count SELECT gave is not news
        except FAILURES as exc:
            self.close()
            raise ImapError(f"{options.name}: {exc}") from exc
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(*FAILURES):  # the server is gone already
            client.logout()

    @property
    def can_idle(self) -> bool:
        return "IDLE" in self.capabilities

    def uids_after(self, last_uid: int, limit: int) -> list[int]:
        """The UIDs above `last_uid`, oldest first, at most `limit`."""
        found = self._run("SEARCH", lambda c: c.search(["UID", f"{last_uid + 1}:*"]))
        # `n:*` always matches the newest message, even when its UID is below n
        return sorted(uid for uid in {int(uid) for uid in found} if uid > last_uid)[:limit]

    def fetch(self, uid: int) -> bytes | None:
        """The whole message as it was delivered; BODY.PEEK leaves it unread."""
        found = self._run("FETCH", lambda c: c.fetch([uid], ["BODY.PEEK[]"]))
        body = found.get(uid, {}).get(b"BODY[]")
        return bytes(body) if body is not None else None  # None: expunged meanwhile

    def flag(self, uid: int, keyword: str) -> None:
        self._run("STORE", lambda c: c.add_flags([uid], [keyword], silent=True))

    def move(self, uid: int, folder: str) -> None:
        """MOVE (RFC 6851), else COPY and keep the original; creates the folder once."""
        if folder not in self._created:
            try:
                self._live().create_folder(folder)
            except imaplib.IMAP4.error:
                pass  # "already exists", the usual answer; a real failure shows in the move
            except OSError as exc:
                raise ImapError(f"CREATE {folder} failed: {exc}") from exc
            self._created.add(folder)
        if "MOVE" in self.capabilities:
            self._run("MOVE", lambda c: c.move([uid], folder))
        else:
            self._run("COPY", lambda c: c.copy([uid], folder))

    def wait_for_news(
        self,
        seconds: float,
        stop: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
    ) -> bool:
        """IDLE until a message arrives (True), `seconds` pass or `stop()` (False). The server
        must offer IDLE (`can_idle`). Checks `stop` at least once a second."""
        client = self._live()
        deadline = clock() + seconds
        if self._arrived_meanwhile():
            return True
        try:
            client.idle()
            arrived = False
            while not arrived and not stop():
                left = deadline - clock()
                if left <= 0:
                    break
                arrived = any(_is_news(r) for r in client.idle_check(timeout=min(1.0, left)))
            _, pending = client.idle_done()
        except FAILURES as exc:
            raise ImapError(f"IDLE failed: {exc}") from exc
        return arrived or any(_is_news(r) for r in pending)

    def _arrived_meanwhile(self) -> bool:
        """Whether the server reported a new message (EXISTS) with the answer to an earlier
        command: imaplib keeps it aside, and IDLE would not report it again."""
        stash: dict[str, Any] = self._live()._imap.untagged_responses
        return bool(stash.pop("EXISTS", None))

    def _run(self, command: str, call: Callable[[Any], Any]) -> Any:
        try:
            return call(self._live())
        except FAILURES as exc:
            raise ImapError(f"{command} failed: {exc}") from exc

    def _live(self) -> Any:
        if self._client is None:
            raise ImapError("not connected")
        return self._client

    def _tls(self) -> ssl.SSLContext:
        """The system's CAs (and the configured extra ones); certificates are always checked."""
        context = ssl.create_default_context()
        if self.options.ca_file is not None:
            context.load_verify_locations(cafile=str(self.options.ca_file))
        return context

    def _starttls(self, client: Any) -> None:
        try:
            client.starttls(self._tls())
        except CapabilityError as exc:
            raise ImapError(
                f"{self.options.host}:{self.options.port} does not offer STARTTLS: refusing to "
                "send the password in plain text (NURTURE_IMAP_SECURITY=ssl for IMAPS, or =none "
                "on a trusted network)"
            ) from exc


def _uidvalidity(selected: dict[bytes, Any]) -> int:
    value = selected.get(b"UIDVALIDITY")
    if value is None:
        raise ImapError("the server gave no UIDVALIDITY for the folder")
    return int(value)


def _is_news(response: Any) -> bool:
    return isinstance(response, tuple) and len(response) >= 2 and response[1] in NEWS


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
