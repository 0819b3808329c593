"""Delivery failures and complaints in the formats real servers send, through a real Dovecot
mailbox to the database: what a permanent failure suppresses, what a temporary one leaves
alone, and that a person who mentions a bounce is still a person (docs/inbox.md)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.inbox.test_inbox import (
    events,
    inbox_runtime,
    letter,
    query,
    send_day_one,
    steps,
    suppressions,
)
from tests.servers.dovecot import Dovecot, Mailbox, dovecot
from tests.servers.smtp import Sink
from worker.inbox.service import poll

pytestmark = pytest.mark.integration


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


def test_a_text_bounce_suppresses_and_a_text_report_of_a_full_mailbox_changes_nothing(
    tmp_path: Path, sqlite_url: str, smtp_sink: Sink, mailbox: Mailbox
) -> None:
    runtime = inbox_runtime(tmp_path, sqlite_url, smtp_sink, mailbox)
    sent = send_day_one(runtime, smtp_sink, datetime.now(UTC))

    mailbox.deliver(letter("exim_mailbox_full", sent))
    polled = poll(runtime)
    assert (polled.kinds, polled.events) == ({"delayed": 1}, {})
    assert suppressions(runtime) == {}
    assert steps(runtime) == [("hello", "sent", None), ("later", "pending", None)]

    mailbox.deliver(letter("qmail_text_bounce", sent))
    polled = poll(runtime)
    assert (polled.kinds, polled.events) == ({"bounce": 1}, {"email_bounced": 1})
    [bounced] = events(runtime, "email_bounced")
    assert (bounced["recipients"], bounced["status"]) == (["ana@example.com"], "5.1.1")
    assert (bounced["step"], bounced["matched_by"]) == ("hello", "message_id")
    assert suppressions(runtime) == {"email": "bounced"}
    assert query(runtime, "SELECT status FROM messages") == [("bounced",)]
    assert events(runtime, "replied") == []


def test_ses_and_office365_bounces_name_the_step_and_suppress(
    tmp_path: Path, sqlite_url: str, smtp_sink: Sink, mailbox: Mailbox
) -> None:
    runtime = inbox_runtime(tmp_path, sqlite_url, smtp_sink, mailbox)
    sent = send_day_one(runtime, smtp_sink, datetime.now(UTC))
    mailbox.deliver(letter("ses_bounce", sent))  # SES replaced the Message-ID
    mailbox.deliver(letter("office365_ndr", sent))
    polled = poll(runtime)
    assert (polled.kinds, polled.events) == ({"bounce": 2}, {"email_bounced": 2})
    found = [(e["step"], e["status"], e["matched_by"]) for e in events(runtime, "email_bounced")]
    assert sorted(found) == [("hello", "5.1.1", "message_id"), ("hello", "5.1.10", "message_id")]
    assert suppressions(runtime) == {"email": "bounced"}


def test_a_complaint_whose_recipient_the_provider_hid_unsubscribes_the_lead(
    tmp_path: Path, sqlite_url: str, smtp_sink: Sink, mailbox: Mailbox
) -> None:
    runtime = inbox_runtime(tmp_path, sqlite_url, smtp_sink, mailbox)
    sent = send_day_one(runtime, smtp_sink, datetime.now(UTC))
    mailbox.deliver(letter("arf_yahoo", sent))
    assert poll(runtime).events == {"unsubscribed": 1}
    [unsubscribed] = events(runtime, "unsubscribed")
    assert (unsubscribed["reason"], unsubscribed["step"]) == ("complaint", "hello")
    assert suppressions(runtime) == {"email": "complaint"}


def test_an_auto_reply_quoting_a_bounce_changes_nothing_and_a_reply_saying_so_ends_the_sequence(
    tmp_path: Path, sqlite_url: str, smtp_sink: Sink, mailbox: Mailbox
) -> None:
    runtime = inbox_runtime(tmp_path, sqlite_url, smtp_sink, mailbox)
    sent = send_day_one(runtime, smtp_sink, datetime.now(UTC))

    mailbox.deliver(letter("auto_reply_quoting_bounce", sent))
    polled = poll(runtime)
    assert (polled.kinds, polled.events) == ({"auto_reply": 1}, {})
    assert steps(runtime) == [("hello", "sent", None), ("later", "pending", None)]

    mailbox.deliver(letter("reply_says_bounced", sent))
    polled = poll(runtime)
    assert (polled.kinds, polled.events) == ({"reply": 1}, {"replied": 1})
    assert suppressions(runtime) == {}
    assert steps(runtime) == [("hello", "sent", None), ("later", "skipped", "exited")]
