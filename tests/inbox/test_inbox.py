"""Inbound email against a real Dovecot: a lead's reply ends the sequence, an out-of-office
changes nothing, bounces suppress, complaints unsubscribe, and polling twice at once or after
a restart emits each event once. Messages are delivered into the mailbox as an MTA would."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from typer.testing import CliRunner

from tests.helpers import make_runtime, samples
from tests.library import WELCOME, exiting_on, greeting_template, welcome_project
from tests.servers.dovecot import Dovecot, Mailbox, dovecot
from tests.servers.smtp import Sink
from worker.api.metrics import render
from worker.cli.main import app as cli
from worker.config import settings
from worker.inbox import service as inbox
from worker.inbox.service import Polled, poll
from worker.ingest.schemas import EventIn
from worker.ingest.service import ingest
from worker.runtime.process import Runtime, build
from worker.sending.service import send_step
from worker.store.db import transaction
from worker.store.steps import claim_due

pytestmark = pytest.mark.integration

MAIL = Path(__file__).parent / "mail"
REPLY_ADDRESS = "reply@example.com"
FILES = welcome_project(exiting_on(WELCOME, "replied", "unsubscribed"), greeting_template("Hello"))


@pytest.fixture(scope="module")
def imap_server() -> Iterator[Dovecot]:
    with dovecot() as server:
        yield server


@pytest.fixture
def mailbox(imap_server: Dovecot) -> Mailbox:
    return imap_server.mailbox()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'nurture.db'}"


def inbox_runtime(
    folder: Path, database_url: str, sink: Sink, mailbox: Mailbox, **settings: Any
) -> Runtime:
    runtime = make_runtime(folder, database_url, FILES, smtp_port=sink.port)
    config = runtime.config.model_copy(
        update={
            "imap_host": mailbox.host,
            "imap_port": mailbox.port,
            "imap_username": mailbox.username,
            "imap_password": SecretStr(mailbox.password),
            "imap_ssl": False,
            "reply_address": f"Nurture <{REPLY_ADDRESS}>",
            "email_from": "Nurture <nurture@example.com>",
            "secret_key": SecretStr("inbox-test-secret"),
            **settings,
        }
    )
    return replace(runtime, config=config)


def send_day_one(runtime: Runtime, sink: Sink, now: datetime) -> Message:
    """Ana signs up; Day 1 goes out through the real send path to the SMTP sink."""
    event = EventIn.model_validate(
        {"type": "signed_up", "lead": {"email": "ana@example.com", "first_name": "Ana"}}
    )
    with transaction(runtime.database) as session:
        ingest(session, runtime.engine, event, now)
    [step] = dispatch(runtime, now)
    assert send_step(runtime, step, clock=lambda: now) == "sent"
    [sent] = sink.messages
    return sent


def dispatch(runtime: Runtime, now: datetime) -> list[str]:
    with transaction(runtime.database) as session:
        return claim_due(session, now, 100)


def letter(name: str, sent: Message) -> bytes:
    """A fixture from tests/inbox/mail, answering (or reporting on) the sent email."""
    raw = (MAIL / f"{name}.eml").read_bytes()
    values = {
        "MAILBOX": REPLY_ADDRESS,
        "REPLY_TO": parseaddr(str(sent["Reply-To"]))[1],
        "MESSAGE_ID": str(sent["Message-ID"]),
        "LEAD": str(sent["To"]),
        "STEP_RUN": str(sent["X-Nurture-Step-Run"]),
    }
    for key, value in values.items():
        raw = raw.replace(b"{{%s}}" % key.encode(), value.encode())
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def query(runtime: Runtime, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with runtime.database.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql), params)]


def events(runtime: Runtime, kind: str) -> list[dict[str, Any]]:
    found = query(runtime, "SELECT properties FROM events WHERE type = :t", t=kind)
    return [json.loads(p) if isinstance(p, str) else p for (p,) in found]


def suppressions(runtime: Runtime) -> dict[str, str]:
    [(value,)] = query(runtime, "SELECT suppressions FROM leads WHERE email = 'ana@example.com'")
    return dict(json.loads(value) if isinstance(value, str) else value)


def steps(runtime: Runtime) -> list[tuple[Any, ...]]:
    return query(runtime, "SELECT step_id, status, reason FROM step_runs ORDER BY position")


PROCESSED = "$NurtureProcessed"


def test_a_reply_ends_the_sequence_and_an_out_of_office_changes_nothing(
    tmp_path: Path, database_url: str, smtp_sink: Sink, mailbox: Mailbox
) -> None:
    runtime = inbox_runtime(tmp_path, database_url, smtp_sink, mailbox)
    now = datetime.now(UTC)
    sent = send_day_one(runtime, smtp_sink, now)
    step = str(sent["X-Nurture-Step-Run"])
    reply_to = parseaddr(str(sent["Reply-To"]))[1]
    assert reply_to.startswith("reply+")
    assert reply_to.endswith("@example.com")
    assert len(reply_to.split("@")[0]) <= 64  # a local part's limit (RFC 5321)

    mailbox.deliver(letter("out_of_office", sent))
    polled = poll(runtime)
    assert (polled.kinds, polled.events) == ({"auto_reply": 1}, {})
    assert events(runtime, "replied") == []
    assert steps(runtime) == [("hello", "sent", None), ("later", "pending", None)]

    mailbox.deliver(letter("gmail_reply", sent))
    polled = poll(runtime)
    assert (polled.read, polled.events) == (1, {"replied": 1})
    [replied] = events(runtime, "replied")
    assert replied["sequence"] == "welcome"
    assert replied["step"] == "hello"
    assert replied["step_run"] == step
    assert replied["matched_by"] == "message_id"
    assert steps(runtime) == [("hello", "sent", None), ("later", "skipped", "exited")]
    assert query(runtime, "SELECT status, exit_reason FROM enrollments") == [("exited", "replied")]

    day_three = now + timedelta(days=3, hours=1)
    assert dispatch(runtime, day_three) == []
    assert len(smtp_sink.messages) == 1  # Day 3 is never sent
    assert mailbox.flags() == {1: {PROCESSED}, 2: {PROCESSED}}  # flagged, kept, still unread
    recorded = query(
        runtime, "SELECT uid, kind, matched_by, step_run_id FROM inbox_messages ORDER BY uid"
    )
    assert recorded == [(1, "auto_reply", "message_id", step), (2, "reply", "message_id", step)]


def test_nurture_inbox_poll_matches_an_outlook_reply_by_its_reply_address_and_moves_it(
    tmp_path: Path,
    sqlite_url: str,
    smtp_sink: Sink,
    mailbox: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime = inbox_runtime(
        tmp_path, sqlite_url, smtp_sink, mailbox, imap_processed_folder="Processed"
    )
    sent = send_day_one(runtime, smtp_sink, datetime.now(UTC))
    # from an address Nurture has never seen, with no In-Reply-To: only the token can tell
    mailbox.deliver(letter("outlook_reply", sent))
    config = runtime.config
    environment = {
        "NURTURE_HOME": str(config.home),
        "NURTURE_DATABASE_URL": sqlite_url,
        "NURTURE_SEQUENCES_DIR": str(config.sequences_dir),
        "NURTURE_TEMPLATES_DIR": str(config.templates_dir),
        "NURTURE_SECRET_KEY": "inbox-test-secret",
        "NURTURE_REPLY_ADDRESS": REPLY_ADDRESS,
        "NURTURE_IMAP_HOST": mailbox.host,
        "NURTURE_IMAP_PORT": str(mailbox.port),
        "NURTURE_IMAP_USERNAME": mailbox.username,
        "NURTURE_IMAP_PASSWORD": mailbox.password,
        "NURTURE_IMAP_SSL": "false",
        "NURTURE_IMAP_PROCESSED_FOLDER": "Processed",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["inbox", "poll"])
    finally:
        settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "1 reply" in result.output
    [replied] = events(runtime, "replied")
    assert (replied["matched_by"], replied["step"]) == ("token", "hello")
    [(lead,)] = query(runtime, "SELECT lead_id FROM events WHERE type = 'replied'")
    [(ana,)] = query(runtime, "SELECT id FROM leads WHERE email = 'ana@example.com'")
    assert lead == ana
    assert query(runtime, "SELECT count(*) FROM leads") == [(1,)]  # no lead for the stranger
    assert mailbox.flags() == {}
    [moved] = mailbox.flags("Processed").values()
    assert PROCESSED in moved
    assert "\\Seen" not in moved  # still unread for whoever looks at the mailbox


def test_a_permanent_bounce_suppresses_the_address_and_a_temporary_one_is_only_recorded(
    tmp_path: Path, database_url: str, smtp_sink: Sink, mailbox: Mailbox
) -> None:
    runtime = inbox_runtime(tmp_path, database_url, smtp_sink, mailbox)
    now = datetime.now(UTC)
    sent = send_day_one(runtime, smtp_sink, now)

    mailbox.deliver(letter("dsn_422_mailbox_full", sent))
    polled = poll(runtime)
    assert (polled.kinds, polled.events) == ({"delayed": 1}, {})
    assert suppressions(runtime) == {}
    assert query(runtime, "SELECT kind, detail FROM inbox_messages") == [("delayed", "4.2.2")]

    mailbox.deliver(letter("dsn_550_user_unknown", sent))
    polled = poll(runtime)
    assert polled.events == {"email_bounced": 1}
    [bounced] = events(runtime, "email_bounced")
    assert bounced["permanent"] is True
    assert bounced["status"] == "5.1.1"
    assert bounced["recipients"] == ["ana@example.com"]
    assert bounced["step"] == "hello"
    assert suppressions(runtime) == {"email": "bounced"}
    assert query(runtime, "SELECT status FROM messages") == [("bounced",)]

    day_three = now + timedelta(days=3, hours=1)
    [later] = dispatch(runtime, day_three)
    assert send_step(runtime, later, clock=lambda: day_three) == "skipped (suppressed)"
    assert len(smtp_sink.messages) == 1


def test_a_feedback_loop_complaint_unsubscribes_the_lead(
    tmp_path: Path, sqlite_url: str, smtp_sink: Sink, mailbox: Mailbox
) -> None:
    runtime = inbox_runtime(tmp_path, sqlite_url, smtp_sink, mailbox)
    sent = send_day_one(runtime, smtp_sink, datetime.now(UTC))
    mailbox.deliver(letter("arf_complaint", sent))
    assert poll(runtime).events == {"unsubscribed": 1}
    [unsubscribed] = events(runtime, "unsubscribed")
    assert unsubscribed["reason"] == "complaint"
    assert unsubscribed["feedback_type"] == "abuse"
    assert unsubscribed["step"] == "hello"
    assert suppressions(runtime) == {"email": "complaint"}
    assert query(runtime, "SELECT status FROM messages") == [("complained",)]
    assert steps(runtime)[1] == ("later", "skipped", "exited")


def test_a_message_that_cannot_be_read_stays_unflagged_is_counted_and_logged_once(
    tmp_path: Path,
    sqlite_url: str,
    smtp_sink: Sink,
    mailbox: Mailbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime = inbox_runtime(tmp_path, sqlite_url, smtp_sink, mailbox)
    sent = send_day_one(runtime, smtp_sink, datetime.now(UTC))
    mailbox.deliver(letter("unreadable", sent))
    mailbox.deliver(letter("gmail_reply", sent))  # does not wait behind the unreadable one
    before = samples(render(lambda: runtime))
    assert "nurture_inbox_last_poll_timestamp_seconds" not in before  # never polled
    with caplog.at_level(logging.WARNING, logger="nurture.inbox"):
        first = poll(runtime)
        second = poll(runtime)
    assert (first.kinds, first.events) == ({"unparseable": 1, "reply": 1}, {"replied": 1})
    assert second.read == 0
    assert len([r for r in caplog.records if "cannot be read" in r.getMessage()]) == 1
    assert mailbox.flags() == {1: set(), 2: {PROCESSED}}  # left in place, unflagged
    after = samples(render(lambda: runtime))
    for kind in ("unparseable", "reply"):
        key = f'nurture_inbox_messages_total{{kind="{kind}"}}'
        assert after[key] - before.get(key, 0.0) == 1.0
    polled = after["nurture_inbox_last_poll_timestamp_seconds"]
    assert abs(polled - datetime.now(UTC).timestamp()) < 600


def test_two_polls_at_once_a_restart_and_a_rebuilt_mailbox_emit_each_event_once(
    tmp_path: Path, database_url: str, smtp_sink: Sink, mailbox: Mailbox
) -> None:
    runtime = inbox_runtime(tmp_path, database_url, smtp_sink, mailbox)
    sent = send_day_one(runtime, smtp_sink, datetime.now(UTC))
    for name in ("out_of_office", "gmail_reply", "dsn_422_mailbox_full",
                 "dsn_550_user_unknown", "arf_complaint"):  # fmt: skip
        mailbox.deliver(letter(name, sent))
    expected = {"replied": 1, "email_bounced": 1, "unsubscribed": 1}

    start = threading.Barrier(2)
    results: list[Polled] = []

    def poller() -> None:
        worker = build(runtime.config)  # another process, as far as the database can tell
        start.wait()
        results.append(poll(worker))

    threads = [threading.Thread(target=poller) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 2
    assert sum(r.read - r.skipped for r in results) == 5  # each message handled by one poll
    emitted = results[0].events + results[1].events
    assert dict(emitted) == expected

    def counts() -> dict[str, int]:
        found = query(
            runtime, "SELECT type, count(*) FROM events WHERE source = 'inbox' GROUP BY type"
        )
        return {str(kind): int(n) for kind, n in found}

    assert counts() == expected
    assert query(runtime, "SELECT count(*) FROM inbox_messages") == [(5,)]

    restarted = build(runtime.config)
    assert poll(restarted).read == 0
    assert counts() == expected

    # the position and the records lost (a restored backup, a folder rebuilt under a new
    # UIDVALIDITY): every message is read again, and the Message-IDs keep the events single
    with transaction(runtime.database) as session:
        session.execute(text("DELETE FROM inbox_messages"))
        session.execute(text("DELETE FROM inbox_positions"))
    again = poll(restarted)
    assert again.read == 5
    assert again.events == {}
    assert counts() == expected
    assert all(flags == {PROCESSED} for flags in mailbox.flags().values())


def test_a_message_that_breaks_the_matching_does_not_hold_up_the_ones_after_it(
    tmp_path: Path,
    sqlite_url: str,
    smtp_sink: Sink,
    mailbox: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime = inbox_runtime(tmp_path, sqlite_url, smtp_sink, mailbox)
    sent = send_day_one(runtime, smtp_sink, datetime.now(UTC))
    mailbox.deliver(letter("out_of_office", sent))
    mailbox.deliver(letter("gmail_reply", sent))
    real_match = inbox.match
    calls: list[str] = []

    def match_failing_once(*args: Any) -> Any:
        calls.append("match")
        if len(calls) == 1:
            raise RuntimeError("a bug only this message shows")
        return real_match(*args)

    monkeypatch.setattr(inbox, "match", match_failing_once)
    polled = poll(runtime)
    assert (polled.kinds, polled.events) == ({"unparseable": 1, "reply": 1}, {"replied": 1})
    assert query(runtime, "SELECT uid, kind, detail FROM inbox_messages ORDER BY uid") == [
        (1, "unparseable", "error"),
        (2, "reply", None),
    ]
    assert mailbox.flags() == {1: set(), 2: {PROCESSED}}


def test_a_mail_to_the_mailto_unsubscribe_address_unsubscribes_the_lead(
    tmp_path: Path, sqlite_url: str, smtp_sink: Sink, mailbox: Mailbox
) -> None:
    runtime = inbox_runtime(tmp_path, sqlite_url, smtp_sink, mailbox)
    sent = send_day_one(runtime, smtp_sink, datetime.now(UTC))
    links = re.findall(r"<([^>]+)>", str(sent["List-Unsubscribe"]))
    [mailto] = [link for link in links if link.startswith("mailto:")]
    address, _, query = mailto.removeprefix("mailto:").partition("?")
    assert address == "unsubscribe@example.com"  # EMAIL_FROM's domain
    subject = unquote(query.removeprefix("subject="))
    # what a mail client sends on the person's behalf when they click "unsubscribe"
    mailbox.deliver(
        (
            f"From: Ana <ana@example.com>\r\nTo: {address}\r\nSubject: {subject}\r\n"
            "Message-ID: <unsub-1@mail.example.com>\r\n"
            "Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n\r\nThis message was sent by Gmail.\r\n"
        ).encode()
    )
    # and one with a forged token changes nothing
    mailbox.deliver(
        (
            f"From: Mallory <m@example.net>\r\nTo: {address}\r\n"
            "Subject: unsubscribe eyJsIjoieCJ9.AAAAAAAAAAAAAAAAAAAAAA\r\n"
            "Message-ID: <unsub-2@mail.example.net>\r\n\r\nx\r\n"
        ).encode()
    )
    assert poll(runtime).events == {"unsubscribed": 1}
    [unsubscribed] = events(runtime, "unsubscribed")
    assert (unsubscribed["reason"], unsubscribed["channel"]) == ("mailto", "email")
    assert suppressions(runtime) == {"email": "mailto"}
    assert steps(runtime)[1] == ("later", "skipped", "exited")
