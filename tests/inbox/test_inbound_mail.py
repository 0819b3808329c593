"""Classifying inbound email (the fixtures real MTAs and clients produce) and the signed
reply+TOKEN address, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from worker.config import Settings
from worker.inbox.classify import Kind, classify
from worker.sending.reply_tokens import reply_address, step_run_of_address
from worker.tasks import make_app

MAIL = Path(__file__).parent / "mail"
RUN = "0123456789abcdef0123456789abcdef"
SENT_ID = f"<{RUN}@example.com>"


def fixture(name: str) -> bytes:
    raw = (MAIL / f"{name}.eml").read_bytes()
    for key, value in {"MAILBOX": "reply@example.com", "REPLY_TO": "reply+t@example.com",
                       "MESSAGE_ID": SENT_ID, "LEAD": "ana@example.com", "STEP_RUN": RUN}.items():  # fmt: skip
        raw = raw.replace(b"{{%s}}" % key.encode(), value.encode())
    return raw


def config(tmp_path: Path, **values: object) -> Settings:
    return Settings.model_validate({"home": tmp_path, "secret_key": SecretStr("k"), **values})


def test_a_gmail_reply_names_the_email_it_answers() -> None:
    found = classify(fixture("gmail_reply"))
    assert found.kind is Kind.REPLY
    assert found.sender == "ana@example.com"
    assert found.in_reply_to == (SENT_ID,)
    assert found.subject == "Re: Hello Ana"


def test_an_outlook_reply_has_no_parent_but_its_reply_address() -> None:
    found = classify(fixture("outlook_reply"))
    assert found.kind is Kind.REPLY
    assert found.in_reply_to == ()
    assert "reply+t@example.com" in found.addressed_to


def test_an_out_of_office_is_an_auto_reply() -> None:
    found = classify(fixture("out_of_office"))
    assert found.kind is Kind.AUTO_REPLY
    assert found.why == "Auto-Submitted: auto-generated"


@pytest.mark.parametrize(
    ("header", "why"),
    [
        ("Precedence: bulk", "Precedence: bulk"),
        ("Precedence: auto_reply", "Precedence: auto_reply"),
        ("X-Autoreply: yes", "X-Autoreply"),
        ("Subject: Out of Office: Hello Ana", "subject: Out of Office: Hello Ana"),
        ("Subject: Abwesenheitsnotiz: Hallo", "subject: Abwesenheitsnotiz: Hallo"),
        ("Return-Path: <>", "null sender"),
    ],
)
def test_what_counts_as_an_auto_reply(header: str, why: str) -> None:
    raw = f"From: ana@example.com\r\n{header}\r\nSubject: Re: Hello\r\n\r\nHi\r\n"
    if header.startswith("Subject"):
        raw = f"From: ana@example.com\r\n{header}\r\n\r\nHi\r\n"
    found = classify(raw.encode())
    assert (found.kind, found.why) == (Kind.AUTO_REPLY, why)


def test_auto_submitted_no_is_a_person() -> None:
    raw = b"From: ana@example.com\r\nAuto-Submitted: no\r\nSubject: Re: Hello\r\n\r\nYes!\r\n"
    assert classify(raw).kind is Kind.REPLY


def test_a_postfix_550_is_a_permanent_bounce_naming_the_sent_message() -> None:
    found = classify(fixture("dsn_550_user_unknown"))
    assert found.kind is Kind.BOUNCE
    assert (found.status, found.recipients) == ("5.1.1", ("ana@example.com",))
    assert found.in_reply_to == (SENT_ID,)
    assert found.step_runs == (RUN,)


def test_a_mailbox_full_delay_is_temporary() -> None:
    found = classify(fixture("dsn_422_mailbox_full"))
    assert found.kind is Kind.DELAYED
    assert found.status == "4.2.2"
    assert found.step_runs == (RUN,)  # from the text/rfc822-headers part


def test_an_arf_report_is_a_complaint() -> None:
    found = classify(fixture("arf_complaint"))
    assert found.kind is Kind.COMPLAINT
    assert (found.status, found.recipients) == ("abuse", ("ana@example.com",))
    assert found.step_runs == (RUN,)


def test_what_cannot_be_read() -> None:
    assert classify(fixture("unreadable")).kind is Kind.UNPARSEABLE
    assert classify(b"Subject: who sent this?\r\n\r\nno sender\r\n").why == "no From address"
    report = (
        b"From: MAILER-DAEMON@mx.example.com\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nsomething failed\r\n--b--\r\n"
    )
    assert classify(report).why == "report without status"


def test_the_reply_address_round_trips_and_refuses_a_forgery(tmp_path: Path) -> None:
    settings = config(tmp_path, reply_address="Sales <reply@example.com>")
    address = reply_address(settings, RUN, "email")
    assert address is not None
    assert address.startswith("Sales <reply+")
    bare = address.split("<")[1].rstrip(">")
    assert len(bare.split("@")[0]) <= 64
    assert step_run_of_address(settings, bare) == RUN
    assert step_run_of_address(settings, bare.upper()) == RUN  # a local part's case may change
    forged = bare.replace(bare[10], "a" if bare[10] != "a" else "b", 1)
    assert step_run_of_address(settings, forged) is None
    assert step_run_of_address(settings, bare.replace("example.com", "example.org")) is None
    other_key = config(tmp_path, reply_address="reply@example.com", secret_key=SecretStr("x"))
    assert step_run_of_address(other_key, bare) is None


def test_no_reply_address_without_the_setting_or_for_internal_alerts(tmp_path: Path) -> None:
    assert reply_address(config(tmp_path), RUN, "email") is None
    assert reply_address(config(tmp_path, reply_address="r@example.com"), RUN, "notify") is None


def test_the_poller_is_scheduled_only_with_a_mailbox(tmp_path: Path) -> None:
    assert "inbox" not in make_app(config(tmp_path)).conf.beat_schedule
    scheduled = make_app(config(tmp_path, imap_host="imap.example.com")).conf.beat_schedule
    assert scheduled["inbox"]["task"] == "inbox.poll"
