"""How the poller reaches the mailbox, against a real Dovecot: STARTTLS with a verified
certificate (and no password sent in plain text unless `none` says so), and `nurture inbox
watch`, which waits with IDLE and handles a message within seconds of its arrival,
re-issuing IDLE on time and polling where IDLE is not offered."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from integrations.imap import ImapError, ImapMailbox, ImapSettings, settings_from
from tests.inbox.test_inbox import events, inbox_runtime, letter, send_day_one, steps
from tests.servers.dovecot import Dovecot, Mailbox, dovecot
from tests.servers.smtp import Certificates, Sink, make_certificates
from worker.cli.main import app as cli
from worker.config import settings
from worker.inbox.service import Polled, poll, watch
from worker.runtime.process import Runtime

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def certificates() -> Iterator[Certificates]:
    folder = Path(tempfile.mkdtemp(prefix="nurture-imap-tls-"))
    try:
        yield make_certificates(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_server(certificates: Certificates) -> Iterator[Dovecot]:
    with dovecot(certificates) as server:
        yield server


@pytest.fixture(scope="module")
def plain_server() -> Iterator[Dovecot]:
    with dovecot() as server:
        yield server


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'nurture.db'}"


def options(mailbox: Mailbox, **changes: Any) -> ImapSettings:
    found = ImapSettings(mailbox.host, mailbox.port, mailbox.username, mailbox.password, "none")
    return replace(found, **changes)


def wait_for(check: Callable[[], bool], seconds: float) -> float:
    """How long `check` took to hold; fails after `seconds`."""
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > seconds:
            raise AssertionError(f"not within {seconds} s")
        time.sleep(0.05)
    return time.monotonic() - began


# -- STARTTLS -----------------------------------------------------------------------------------


def test_starttls_reads_the_mailbox_over_a_verified_connection(
    tmp_path: Path,
    sqlite_url: str,
    smtp_sink: Sink,
    tls_server: Dovecot,
    certificates: Certificates,
) -> None:
    mailbox = tls_server.mailbox()
    runtime = inbox_runtime(
        tmp_path, sqlite_url, smtp_sink, mailbox,
        imap_security="starttls", imap_ca_file=certificates.ca,
    )  # fmt: skip
    sent = send_day_one(runtime, smtp_sink, datetime.now(UTC))
    mailbox.deliver(letter("gmail_reply", sent))
    polled = poll(runtime)
    assert (polled.read, polled.events) == (1, {"replied": 1})
    assert [r["step"] for r in events(runtime, "replied")] == ["hello"]
    assert steps(runtime) == [("hello", "sent", None), ("later", "skipped", "exited")]


def test_starttls_checks_the_certificate(tls_server: Dovecot) -> None:
    with pytest.raises(ImapError, match="CERTIFICATE_VERIFY_FAILED"):
        ImapMailbox(options(tls_server.mailbox(), security="starttls")).__enter__()


def test_starttls_refuses_to_log_in_where_the_server_does_not_offer_it(
    plain_server: Dovecot,
) -> None:
    with pytest.raises(ImapError, match="does not offer STARTTLS: refusing to send the password"):
        ImapMailbox(options(plain_server.mailbox(), security="starttls")).__enter__()
    # plain text only when asked for by name
    with ImapMailbox(options(plain_server.mailbox(), security="none")) as mailbox:
        assert mailbox.uids_after(0, 10) == []


def test_the_security_setting_and_its_older_form(tmp_path: Path) -> None:
    base = settings().model_copy(update={"imap_host": "mail.example.com"})
    cases = {
        (None, True): ("ssl", 993),
        (None, False): ("none", 143),
        ("starttls", True): ("starttls", 143),
        ("ssl", False): ("ssl", 993),
        ("none", True): ("none", 143),
    }
    for (security, ssl), expected in cases.items():
        config = base.model_copy(update={"imap_security": security, "imap_ssl": ssl})
        found = settings_from(config)
        assert found is not None
        assert (found.security, found.port) == expected


# -- IDLE ---------------------------------------------------------------------------------------


def test_idle_wakes_when_a_message_arrives_and_times_out_when_none_does(
    plain_server: Dovecot,
) -> None:
    mailbox = plain_server.mailbox()
    with ImapMailbox(options(mailbox)) as reader:
        assert reader.can_idle
        began = time.monotonic()
        assert reader.wait_for_news(0.5) is False
        assert 0.4 < time.monotonic() - began < 2.0

        later = threading.Timer(0.3, mailbox.deliver, [b"Subject: hi\r\n\r\nhello\r\n"])
        later.start()
        began = time.monotonic()
        assert reader.wait_for_news(10) is True
        assert time.monotonic() - began < 2.0
        later.join()
        assert reader.uids_after(0, 10) == [1]

        # a message that arrives during a poll: Dovecot's SEARCH does not see it yet but
        # reports it (EXISTS) with its answer, and IDLE would not report it again
        mailbox.deliver(b"Subject: two\r\n\r\nagain\r\n")
        assert reader.uids_after(1, 10) == []
        began = time.monotonic()
        assert reader.wait_for_news(10) is True
        assert time.monotonic() - began < 0.5
        assert reader.uids_after(1, 10) == [2]


class Watcher:
    """`watch` in a thread, as `nurture inbox watch` runs it; every poll's result kept."""

    def __init__(self, runtime: Runtime, **options: Any) -> None:
        self.stop = threading.Event()
        self.polls: list[Polled] = []
        self.thread = threading.Thread(
            target=watch, args=(runtime, self.stop, self.polls.append), kwargs=options
        )

    def __enter__(self) -> Watcher:
        self.thread.start()
        wait_for(lambda: len(self.polls) >= 1, 10)
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


def test_a_reply_delivered_while_watching_is_handled_within_seconds(
    tmp_path: Path, sqlite_url: str, smtp_sink: Sink, plain_server: Dovecot
) -> None:
    mailbox = plain_server.mailbox()
    runtime = inbox_runtime(tmp_path, sqlite_url, smtp_sink, mailbox, imap_security="none")
    sent = send_day_one(runtime, smtp_sink, datetime.now(UTC))
    with Watcher(runtime) as watcher:
        time.sleep(0.3)  # idling now
        assert len(watcher.polls) == 1
        mailbox.deliver(letter("gmail_reply", sent))
        took = wait_for(lambda: len(events(runtime, "replied")) == 1, 5)
    assert took < 2.0
    assert steps(runtime) == [("hello", "sent", None), ("later", "skipped", "exited")]
    assert mailbox.flags() == {1: {"$NurtureProcessed"}}
    assert sum(p.read for p in watcher.polls) == 1


def test_idle_is_issued_again_on_time_and_still_hears_the_next_message(
    tmp_path: Path, sqlite_url: str, smtp_sink: Sink, plain_server: Dovecot
) -> None:
    mailbox = plain_server.mailbox()
    runtime = inbox_runtime(tmp_path, sqlite_url, smtp_sink, mailbox, imap_security="none")
    sent = send_day_one(runtime, smtp_sink, datetime.now(UTC))
    with Watcher(runtime, idle_seconds=0.3) as watcher:
        wait_for(lambda: len(watcher.polls) >= 4, 5)  # each IDLE ended on time, then a poll
        mailbox.deliver(letter("gmail_reply", sent))
        wait_for(lambda: len(events(runtime, "replied")) == 1, 3)


def test_without_idle_the_watcher_polls_every_interval(
    tmp_path: Path,
    sqlite_url: str,
    smtp_sink: Sink,
    plain_server: Dovecot,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ImapMailbox, "can_idle", property(lambda self: False))
    mailbox = plain_server.mailbox()
    runtime = inbox_runtime(
        tmp_path, sqlite_url, smtp_sink, mailbox, imap_security="none", inbox_poll_interval=0.2
    )
    sent = send_day_one(runtime, smtp_sink, datetime.now(UTC))
    with Watcher(runtime) as watcher:
        wait_for(lambda: len(watcher.polls) >= 3, 3)
        mailbox.deliver(letter("gmail_reply", sent))
        wait_for(lambda: len(events(runtime, "replied")) == 1, 3)


def test_the_watcher_connects_again_after_the_mailbox_was_unreachable(
    tmp_path: Path, sqlite_url: str, smtp_sink: Sink, plain_server: Dovecot
) -> None:
    mailbox = plain_server.mailbox()
    wrong = replace(mailbox, password="wrong")
    runtime = inbox_runtime(tmp_path, sqlite_url, smtp_sink, wrong, imap_security="none")
    stop = threading.Event()
    thread = threading.Thread(target=watch, args=(runtime, stop), kwargs={"retry_seconds": 0.1})
    thread.start()
    time.sleep(0.5)  # refused, logged, tried again a few times
    assert thread.is_alive()
    stop.set()
    thread.join(5)
    assert not thread.is_alive()


def test_nurture_inbox_watch_without_a_mailbox_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NURTURE_IMAP_HOST", raising=False)
    settings.cache_clear()
    try:
        (tmp_path / "sequences").mkdir()
        (tmp_path / "sequences" / "welcome.yaml").write_text(
            "name: W\nenroll: {on: x}\nsteps:\n  - {id: a, day: 1, crm_task: {subject: Hi}}\n"
        )
        result = CliRunner().invoke(cli, ["inbox", "watch"])
    finally:
        settings.cache_clear()
    assert result.exit_code == 1
    assert "set NURTURE_IMAP_HOST" in result.output
