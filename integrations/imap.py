"""Reading a mailbox over IMAP (imaplib): select a folder, list what arrived after a UID, fetch
it without marking it read, and mark it processed by a keyword or a move. Never deletes.

Every failure of the server or the connection is an `ImapError`: the poller stops and the next
run starts again from where the database says it stopped.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from worker.kit.errors import NurtureError

if TYPE_CHECKING:
    from worker.config import Settings


class ImapError(NurtureError):
    """The server refused a command, or the connection failed."""


@dataclass(frozen=True)
class ImapSettings:
    host: str
    port: int
    username: str
    password: str
    use_ssl: bool = True
    folder: str = "INBOX"
    timeout: float = 30.0

    @property
    def name(self) -> str:
        """Where the poller's position is kept: the same account and folder, the same name."""
        return f"{self.username}@{self.host}:{self.port}/{self.folder}"


def settings_from(config: Settings) -> ImapSettings | None:
    """The mailbox NURTURE_IMAP_* names, or None when no host is set."""
    if not config.imap_host:
        return None
    return ImapSettings(
        host=config.imap_host,
        port=config.imap_port or (993 if config.imap_ssl else 143),
        username=config.imap_username or "",
        password=config.imap_password.get_secret_value() if config.imap_password else "",
        use_ssl=config.imap_ssl,
        folder=config.imap_folder,
    )


class ImapMailbox:
    """One logged-in connection with the folder selected read-write; use it as a context
    manager (`with ImapMailbox(options) as mailbox:`)."""

    def __init__(self, options: ImapSettings) -> None:
        self.options = options
        self._connection: imaplib.IMAP4 | None = None
        self._created: set[str] = set()
        self.capabilities: set[str] = set()
        self.uidvalidity = 0

    def __enter__(self) -> ImapMailbox:
        options = self.options
        try:
            if options.use_ssl:
                connection: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    options.host,
                    options.port,
                    ssl_context=ssl.create_default_context(),
                    timeout=options.timeout,
                )
            else:
                connection = imaplib.IMAP4(options.host, options.port, timeout=options.timeout)
        except OSError as exc:
            raise ImapError(f"cannot connect to {options.host}:{options.port}: {exc}") from exc
        self._connection = connection
        try:
            self._check(connection.login(options.username, options.password), "LOGIN")
            # servers list more after login than in their greeting (Dovecot: MOVE, UIDPLUS)
            _, found = connection.capability()
            self.capabilities = {c.upper() for c in b" ".join(found or []).decode().split()}
            self._check(connection.select(quote(options.folder)), f"SELECT {options.folder}")
            self.uidvalidity = self._uidvalidity(connection)
        except (OSError, imaplib.IMAP4.error) as exc:
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
        connection, self._connection = self._connection, None
        if connection is None:
            return
        with contextlib.suppress(OSError, imaplib.IMAP4.error):  # the server is gone already
            connection.logout()

    def uids_after(self, last_uid: int, limit: int) -> list[int]:
        """The UIDs above `last_uid`, oldest first, at most `limit`."""
        data = self._run("SEARCH", "UID", f"{last_uid + 1}:*")
        # `n:*` always matches the newest message, even when its UID is below n
        lines = [line for line in data if isinstance(line, bytes)]
        found = sorted({int(uid) for line in lines for uid in line.split()})
        return [uid for uid in found if uid > last_uid][:limit]

    def fetch(self, uid: int) -> bytes | None:
        """The whole message as it was delivered; BODY.PEEK leaves it unread."""
        data = self._run("FETCH", str(uid), "(BODY.PEEK[])")
        for item in data:
            if isinstance(item, tuple) and len(item) == 2:
                return item[1]
        return None  # expunged by someone else in between

    def flag(self, uid: int, keyword: str) -> None:
        self._run("STORE", str(uid), "+FLAGS.SILENT", f"({keyword})")

    def move(self, uid: int, folder: str) -> None:
        """MOVE (RFC 6851), else COPY and keep the original; creates the folder once."""
        connection = self._live()
        if folder not in self._created:
            try:
                connection.create(quote(folder))  # "already exists" is the usual answer
            except (OSError, imaplib.IMAP4.error) as exc:
                raise ImapError(f"CREATE {folder} failed: {exc}") from exc
            self._created.add(folder)
        if "MOVE" in self.capabilities:
            self._run("MOVE", str(uid), quote(folder))
        else:
            self._run("COPY", str(uid), quote(folder))

    def _run(self, command: str, *args: str) -> list[bytes | tuple[bytes, bytes] | None]:
        connection = self._live()
        try:
            kind, data = connection.uid(command, *args)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise ImapError(f"UID {command} failed: {exc}") from exc
        if kind != "OK":
            raise ImapError(f"UID {command} refused: {data!r}")
        return list(data)

    def _live(self) -> imaplib.IMAP4:
        if self._connection is None:
            raise ImapError("not connected")
        return self._connection

    @staticmethod
    def _check(answer: tuple[str, Sequence[object]], what: str) -> None:
        kind, data = answer
        if kind != "OK":
            raise ImapError(f"{what} refused: {data!r}")

    @staticmethod
    def _uidvalidity(connection: imaplib.IMAP4) -> int:
        _, data = connection.response("UIDVALIDITY")
        for item in data or []:
            if isinstance(item, bytes) and item.strip().isdigit():
                return int(item)
        raise ImapError("the server gave no UIDVALIDITY for the folder")


def quote(folder: str) -> str:
    """A folder name as an IMAP string (imaplib sends arguments as they are)."""
    if re.fullmatch(r"[A-Za-z0-9._/-]+", folder):
        return folder
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'
