"""Failures and complaints in the formats the public collections miss (tests/inbox/mail), one
by one, and the messages that only look like them: what classify() says about each."""

from __future__ import annotations

import pytest

from tests.inbox.corpus import LEAD, PLACEHOLDERS, ours
from worker.inbox.classify import Inbound, Kind, classify

RUN = PLACEHOLDERS["STEP_RUN"]
SENT_ID = PLACEHOLDERS["MESSAGE_ID"]
WRITTEN = {sample.name: sample.raw for sample in ours()}
ORIGINAL = f"""From: Nurture <nurture@example.com>
To: {LEAD}
Subject: Hello Ana
Message-ID: {SENT_ID}
X-Nurture-Step-Run: {RUN}

Hello Ana, here is what is new this week.
"""


def written(name: str) -> Inbound:
    return classify(WRITTEN[name])


def message(headers: str, body: str) -> Inbound:
    return classify(f"{headers.strip()}\n\n{body}".replace("\n", "\r\n").encode())


@pytest.mark.parametrize(
    ("name", "status"),
    [("office365_ndr", "5.1.10"), ("gmail_dsn_failure", "5.1.1"), ("ses_bounce", "5.1.1")],
)
def test_a_provider_dsn_is_a_permanent_bounce_naming_the_address_and_step(
    name: str, status: str
) -> None:
    found = written(name)
    assert (found.kind, found.recipients, found.status) == (Kind.BOUNCE, (LEAD,), status)
    assert found.step_runs == (RUN,)


def test_ses_rewrites_the_message_id_but_keeps_our_step_run_header() -> None:
    found = written("ses_bounce")
    assert found.in_reply_to != (SENT_ID,)
    assert found.step_runs == (RUN,)


def test_an_office365_ndr_matches_the_sent_message_not_its_own_thread() -> None:
    assert written("office365_ndr").in_reply_to == (SENT_ID,)


@pytest.mark.parametrize("name", ["dsn_422_mailbox_full", "dsn_522_mailbox_full"])
def test_a_full_mailbox_is_temporary_even_as_a_final_5_2_2_failure(name: str) -> None:
    found = written(name)
    assert (found.kind, found.recipients) == (Kind.DELAYED, (LEAD,))


def test_an_arf_complaint_from_yahoo_that_hides_the_recipient_names_the_step() -> None:
    found = written("arf_yahoo")
    assert (found.kind, found.status) == (Kind.COMPLAINT, "abuse")
    assert found.step_runs == (RUN,)


def test_an_auto_reply_that_quotes_a_bounce_is_an_auto_reply() -> None:
    found = written("auto_reply_quoting_bounce")
    assert (found.kind, found.recipients) == (Kind.AUTO_REPLY, ())


def test_a_person_who_writes_that_the_email_bounced_is_a_reply() -> None:
    found = written("reply_says_bounced")
    assert (found.kind, found.sender, found.in_reply_to) == (Kind.REPLY, LEAD, (SENT_ID,))


QUOTED_BOUNCE = """Look what came back:

Hi. This is the qmail-send program at mx.corp.example.org.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<ana.ito@corp.example.org>:
Sorry, no mailbox here by that name. (#5.1.1)
"""


@pytest.mark.parametrize(
    ("headers", "kind"),
    [
        (f"From: Ana <{LEAD}>\nSubject: Re: Undeliverable: Hello Ana\nIn-Reply-To: {SENT_ID}",
         Kind.REPLY),
        (f"From: Ana <{LEAD}>\nSubject: Fwd: Undelivered Mail Returned to Sender", Kind.REPLY),
        (f"From: Ana <{LEAD}>\nSubject: Automatic reply: Mail delivery failed\n"
         "Auto-Submitted: auto-replied", Kind.AUTO_REPLY),
    ],
)  # fmt: skip
def test_a_person_quoting_a_bounce_is_not_a_bounce(headers: str, kind: Kind) -> None:
    assert message(headers, QUOTED_BOUNCE).kind is kind


def test_a_person_writing_about_a_failed_delivery_is_a_reply() -> None:
    found = message(
        f"From: Ana <{LEAD}>\nSubject: Delivery failure of my order 1234",
        "Hello, my parcel could not be delivered and was returned to sender. Can you help?",
    )
    assert found.kind is Kind.REPLY


def test_a_forwarded_dsn_attached_whole_is_the_forwarder_s_message() -> None:
    dsn = WRITTEN["dsn_550_user_unknown"].decode()
    found = message(
        f"From: Ana <{LEAD}>\nSubject: Fwd: Undelivered Mail Returned to Sender\n"
        'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="fwd"',
        f"--fwd\nContent-Type: text/plain\n\nThis came back, is my address wrong?\n"
        f"--fwd\nContent-Type: message/rfc822\n\n{dsn}\n--fwd--\n",
    )
    assert found.kind is Kind.REPLY


def test_a_qmail_text_bounce_is_permanent_and_names_the_address_and_step() -> None:
    found = message(
        "From: MAILER-DAEMON@mx.example.org\nSubject: failure notice\nReturn-Path: <>",
        f"""Hi. This is the qmail-send program at mx.example.org.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<{LEAD}>:
Sorry, no mailbox here by that name. (#5.1.1)

--- Below this line is a copy of the message.

{ORIGINAL}""",
    )
    assert (found.kind, found.recipients, found.status) == (Kind.BOUNCE, (LEAD,), "5.1.1")


def test_an_exim_text_report_of_a_full_mailbox_is_temporary() -> None:
    found = message(
        "From: Mail Delivery System <Mailer-Daemon@mx.example.org>\n"
        f"Subject: Mail delivery failed: returning message to sender\nX-Failed-Recipients: {LEAD}",
        f"""This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  {LEAD}
    mailbox is full: retry timeout exceeded

------ This is a copy of the message, including all the headers. ------

{ORIGINAL}""",
    )
    assert (found.kind, found.recipients) == (Kind.DELAYED, (LEAD,))


def test_a_report_naming_no_address_is_matched_by_the_message_it_returns() -> None:
    found = message(
        "From: postmaster@mx.example.org\nSubject: Undeliverable mail\n"
        'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"',
        "--b\nContent-Type: text/plain\n\nYour message could not be delivered: "
        f"no such user.\n--b\nContent-Type: message/rfc822\n\n{ORIGINAL}\n--b--\n",
    )
    assert (found.kind, found.recipients, found.step_runs) == (Kind.BOUNCE, (), (RUN,))


def test_receipts_are_auto_replies_but_a_sieve_rejection_of_a_full_mailbox_is_temporary() -> None:
    def mdn(sender: str, text: str) -> Inbound:
        return message(
            f"From: {sender}\nSubject: Read: Hello Ana\nMIME-Version: 1.0\n"
            'Content-Type: multipart/report; report-type=disposition-notification; boundary="b"',
            f"--b\nContent-Type: text/plain\n\n{text}\n"
            "--b\nContent-Type: message/disposition-notification\n\n"
            f"Final-Recipient: rfc822; {LEAD}\n"
            "Disposition: manual-action/MDN-sent-manually; displayed\n--b--\n",
        )

    assert mdn(f"Ana <{LEAD}>", "Your message was read.").why == "read receipt"
    rejected = mdn(
        "Mail Delivery Subsystem <admin@example.org>",
        f"Your message to <{LEAD}> was automatically rejected:\nQuota exceeded",
    )
    assert (rejected.kind, rejected.recipients) == (Kind.DELAYED, (LEAD,))


def test_a_success_notification_is_an_auto_reply() -> None:
    found = message(
        "From: MAILER-DAEMON@mx.example.org\nSubject: Successful Mail Delivery Report\n"
        'MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary="b"',
        "--b\nContent-Type: text/plain\n\nDelivered.\n--b\nContent-Type: message/delivery-status\n\n"
        f"Reporting-MTA: dns; mx.example.org\n\nFinal-Recipient: rfc822; {LEAD}\n"
        "Action: delivered\nStatus: 2.0.0\n--b--\n",
    )
    assert (found.kind, found.why) == (Kind.AUTO_REPLY, "delivery report: delivered")


def test_a_report_with_raw_8_bit_headers_still_names_the_address() -> None:
    raw = WRITTEN["qmail_text_bounce"].replace(
        b"From: MAILER-DAEMON@mail.example.net",
        "From: Système de messagerie <MAILER-DAEMON@mail.example.net>".encode(),
    )
    found = classify(raw)
    assert (found.kind, found.recipients) == (Kind.BOUNCE, (LEAD,))
