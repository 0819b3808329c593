"""A real Dovecot IMAP server for tests, on loopback in a temporary folder (RECIPES.md).

Plain auth, no TLS, one maildir per user. Skips with the reason when `dovecot` is missing
(`scripts/install-test-servers` installs `dovecot-imapd`). As root the mail belongs to
`dovenull`; as anyone else, to that user.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import free_port
from tests.servers.smtp import Certificates

CONFIG = """\
protocols = imap
listen = 127.0.0.1
base_dir = {folder}/run
state_dir = {folder}/state
log_path = {folder}/dovecot.log
info_log_path = {folder}/dovecot.log
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
first_valid_gid = 1
{users}
mail_location = maildir:{folder}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {folder}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={folder}/mail/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"""
USERS = 200
PASSWORD = "secret"


@dataclass(frozen=True)
class Mailbox:
    """One user's mailbox on the test server, reached the way the poller reaches it."""

    host: str
    port: int
    username: str
    password: str

    def client(self) -> imaplib.IMAP4:
        connection = imaplib.IMAP4(self.host, self.port, timeout=10)
        connection.login(self.username, self.password)
        return connection

    def deliver(self, raw: bytes, folder: str = "INBOX") -> None:
        """Put a message in the mailbox the way an MTA's local delivery would: unread."""
        with self.client() as connection:
            kind, _ = connection.append(folder, "", imaplib.Time2Internaldate(time.time()), raw)
            assert kind == "OK"

    def flags(self, folder: str = "INBOX") -> dict[int, set[str]]:
        """Every message's UID → its flags, as a mail client sees them."""
        with self.client() as connection:
            connection.select(folder, readonly=True)
            _, data = connection.uid("FETCH", "1:*", "(UID FLAGS)")
        found: dict[int, set[str]] = {}
        for item in data:
            if not isinstance(item, bytes):
                continue
            uid, flags = UID.search(item.decode()), FLAGS.search(item.decode())
            if uid is not None and flags is not None:
                found[int(uid[1])] = set(flags[1].split())
        return found


UID = re.compile(r"\bUID (\d+)")
FLAGS = re.compile(r"\bFLAGS \(([^)]*)\)")


@dataclass
class Dovecot:
    folder: Path
    port: int
    users: int = 0

    def mailbox(self) -> Mailbox:
        """A user with an empty mailbox: every test gets its own."""
        self.users += 1
        if self.users > USERS:
            raise RuntimeError(f"the test server has {USERS} users: raise USERS")
        return Mailbox("127.0.0.1", self.port, f"user{self.users}", PASSWORD)


@contextmanager
def dovecot(certificates: Certificates | None = None) -> Iterator[Dovecot]:
    """Start the server (about 0.2 s; stopping takes 2-3 s, so keep one per session); with
    `certificates`, it offers STARTTLS with them."""
    binary = shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/sbin")
    if binary is None:
        pytest.skip("dovecot not found: run scripts/install-test-servers (dovecot-imapd)")
    # not under pytest's folders: they are private to root, and dovenull must reach the mail
    folder = Path(tempfile.mkdtemp(prefix="nurture-imap-"))
    folder.chmod(0o755)
    if os.geteuid() == 0:
        owner = pwd.getpwnam("dovenull")
        users = ""
    else:
        owner = pwd.getpwuid(os.geteuid())
        users = f"default_login_user = {owner.pw_name}\ndefault_internal_user = {owner.pw_name}"
    mail = folder / "mail"
    mail.mkdir()
    os.chown(mail, owner.pw_uid, owner.pw_gid)
    # every user exists from the start: Dovecot re-reads a changed passwd-file only lazily
    (folder / "users").write_text(
        "".join(f"user{n}:{{PLAIN}}{PASSWORD}\n" for n in range(1, USERS + 1))
    )
    port = free_port()
    config = folder / "dovecot.conf"
    config.write_text(
        CONFIG.format(
            folder=folder,
            port=port,
            uid=owner.pw_uid,
            gid=owner.pw_gid,
            users=users,
            ssl="ssl = no"
            if certificates is None
            else f"ssl = yes\nssl_cert = <{certificates.cert}\nssl_key = <{certificates.key}",
        )
    )
    # the master daemonizes and keeps its output open: a pipe here would never reach EOF
    errors = folder / "start.log"
    with errors.open("wb") as output:
        started = subprocess.run(
            [binary, "-c", str(config)], stdin=subprocess.DEVNULL, stdout=output, stderr=output
        )
    if started.returncode != 0:
        message = errors.read_text(errors="replace").strip()
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"dovecot did not start: {message}")
    server = Dovecot(folder, port)
    try:
        _wait_until_up(server.mailbox(), folder)
        yield server
    finally:
        _stop(folder)
        shutil.rmtree(folder, ignore_errors=True)


def _wait_until_up(mailbox: Mailbox, folder: Path) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            with mailbox.client() as connection:
                connection.select("INBOX")
            return
        except (OSError, imaplib.IMAP4.error):
            if time.monotonic() > deadline:
                log = folder / "dovecot.log"
                raise AssertionError(
                    f"dovecot did not answer: {log.read_text() if log.exists() else ''}"
                ) from None
            time.sleep(0.05)


def _stop(folder: Path) -> None:
    pid_file = folder / "run" / "master.pid"
    with suppress(OSError, ValueError):
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            os.kill(pid, 0)  # raises once the master is gone
            time.sleep(0.05)
