"""Email over SMTP against real aiosmtpd servers: what arrives, parsed with the email package
(parts, headers, DKIM, unsubscribe, tracking), one connection for many messages, reconnects,
TLS and login, and which replies retry, fail or suppress."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import dkim
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import text
from typer.testing import CliRunner

from integrations.ports import DeliveryUncertain, EmailMessage, PermanentError, TemporaryError
from integrations.smtp import SmtpSender, SmtpSettings
from tests.helpers import daytime_zone, free_port, make_runtime
from tests.servers.smtp import (
    Certificates,
    RawSink,
    make_certificates,
    password_checker,
    server_tls,
    smtp_server,
)
from worker.api.app import create_app
from worker.config import Settings, settings
from worker.kit.signing import verify
from worker.runtime.process import Runtime
from worker.sending.email import mailto_token
from worker.sending.service import send_step
from worker.store.db import transaction
from worker.store.steps import claim_due

pytestmark = pytest.mark.integration

SEQUENCE = """
name: Welcome
enroll: {on: signed_up}
steps:
  - {id: hello, day: 1, email: w/hello}
  - {id: receipt, day: 1, email: w/receipt}
  - {id: later, day: 3, email: w/hello}
"""
HELLO = """---
subject: "Hello {{ lead.first_name | default('there') }}"
preheader: "Three steps to your first follow-up"
from: "Sam at Acme <sam@acme.example>"
reply_to: "sam@acme.example"
---
<html><body><p>Hi {{ lead.first_name }}! <a href="https://acme.example/start?a=1&amp;b=2">Start</a>
or <a href="mailto:help@acme.example">write to us</a>.</p></body></html>
"""
HELLO_TEXT = "Hi {{ lead.first_name }}! Start: https://acme.example/start"
RECEIPT = """---
subject: "Your receipt"
transactional: true
---
<p>Thanks for your order. <a href="https://acme.example/orders">Your orders</a></p>
"""
NOTIFY_SEQUENCE = """
name: Alerts
enroll: {on: signed_up}
steps:
  - id: tell-sales
    day: 1
    notify: {email: sales@acme.example, template: internal/alert}
"""
ALERT = """---
subject: "New signup: {{ lead.email }}"
transactional: true
---
<p>{{ lead.first_name }} signed up. <a href="https://crm.acme.example/x">Open in CRM</a></p>
"""
PUBLIC_URL = "https://nurture.acme.example"
TOKEN = "test-token"


# -- servers and runtimes --------------------------------------------------------------------


@pytest.fixture
def sink() -> RawSink:
    return RawSink()


@pytest.fixture
def port(sink: RawSink) -> Iterator[int]:
    with smtp_server(sink) as found:
        yield found


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def dkim_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A private key file and the DNS TXT record of its public key."""
    import subprocess

    folder = tmp_path_factory.mktemp("dkim")
    private = folder / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(private), "2048"], check=True,
                   capture_output=True)  # fmt: skip
    public = subprocess.run(
        ["openssl", "rsa", "-in", str(private), "-pubout", "-outform", "DER"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    import base64

    return private, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def sender_for(port: int, **options: Any) -> SmtpSender:
    return SmtpSender(SmtpSettings(host="127.0.0.1", port=port, **options))


def message(number: int = 0, to: str = "ana@example.com") -> EmailMessage:
    return EmailMessage(
        to=to,
        subject=f"Message {number}",
        html=f"<p>Number {number}</p>",
        text=f"Number {number}",
        from_address="Acme <hello@acme.example>",
        headers={
            "Message-ID": f"<run-{number}@acme.example>",
            "X-Nurture-Step-Run": f"run-{number}",
        },
    )


def runtime_for(folder: Path, port: int | None, files: dict[str, str], **settings_: Any) -> Runtime:
    """A runtime on SQLite whose email goes to `port` (or the outbox when None)."""
    found = make_runtime(folder, f"sqlite:///{folder / 'nurture.db'}", files, smtp_port=port)
    config = found.config.model_copy(
        update={
            "public_url": PUBLIC_URL,
            "email_from": "Acme <hello@acme.example>",
            "api_tokens": TOKEN,
            "imap_host": "imap.acme.example",  # a mailbox is read: the mailto is offered
            **settings_,
        }
    )
    found.config = config
    if port is not None:
        found.email = SmtpSender.from_settings(config)
    return found


def send_due(runtime: Runtime) -> dict[str, str]:
    now = datetime.now(UTC)
    with transaction(runtime.database) as session:
        leased = claim_due(session, now, 100)
    return {step: send_step(runtime, step, lambda: now) for step in leased}


def enroll(runtime: Runtime, client: TestClient, email: str = "ana@example.com") -> str:
    event = {"type": "signed_up", "lead": {"email": email, "first_name": "Ana"}}
    response = client.post("/v1/events", json=event, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 202, response.text
    return str(response.json()["lead_id"])


@pytest.fixture
def welcome(tmp_path: Path, port: int, dkim_keys: tuple[Path, bytes]) -> Runtime:
    return runtime_for(
        tmp_path,
        port,
        {"sequences/welcome.yaml": SEQUENCE, "templates/w/hello.html.j2": HELLO,
         "templates/w/hello.txt.j2": HELLO_TEXT, "templates/w/receipt.html.j2": RECEIPT},
        dkim_domain="acme.example", dkim_selector="nurture",
        dkim_private_key=SecretStr(str(dkim_keys[0])),
    )  # fmt: skip


def parts(found: Message) -> dict[str, str]:
    assert found.get_content_type() == "multipart/alternative"
    payload = [part for part in found.walk() if part is not found]
    types = [part.get_content_type() for part in payload]
    assert types == ["text/plain", "text/html"]  # plain first: clients show the last they can
    decoded = {}
    for part in payload:
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
        raw = part.get_payload(decode=True)
        assert isinstance(raw, bytes)
        decoded[part.get_content_subtype()] = raw.decode()
    return decoded


def unsubscribe_links(found: Message) -> tuple[str, str]:
    https, mailto = re.findall(r"<([^>]+)>", str(found["List-Unsubscribe"]))
    return https, mailto


# -- the message as it arrives -----------------------------------------------------------------


def test_a_marketing_email_arrives_whole_signed_and_tracked(
    welcome: Runtime, sink: RawSink, dkim_keys: tuple[Path, bytes]
) -> None:
    client = TestClient(create_app(lambda: welcome))
    lead_id = enroll(welcome, client)
    results = send_due(welcome)
    assert sorted(results.values()) == ["sent", "sent"]
    by_subject = {str(a.message["Subject"]): a for a in sink.arrived}
    hello = by_subject["Hello Ana"]
    found = hello.message
    run = str(found["X-Nurture-Step-Run"])
    assert results[run] == "sent"

    # envelope and identity
    assert hello.mail_from == "sam@acme.example"
    assert hello.rcpt_tos == ["ana@example.com"]
    assert found["From"] == "Sam at Acme <sam@acme.example>"
    assert found["Reply-To"] == "sam@acme.example"
    assert found["To"] == "ana@example.com"
    assert found["Message-ID"] == f"<{run}@acme.example>"  # fixed per step run
    assert found["Date"] is not None
    assert found["MIME-Version"] == "1.0"

    # RFC 8058 one-click, HTTPS and mailto
    https, mailto = unsubscribe_links(found)
    assert https.startswith(f"{PUBLIC_URL}/u/")
    assert found["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    address, _, query = mailto.removeprefix("mailto:").partition("?")
    assert address == "unsubscribe@acme.example"
    token = mailto_token(unquote(query.removeprefix("subject=")))
    assert token is not None
    assert verify(welcome.config, token) == {"l": lead_id, "c": "email"}
    assert https.endswith(f"/u/{token}")

    # parts: the plain text as written, the HTML tracked, with preheader and footer
    body = parts(found)
    assert body["plain"].startswith("Hi Ana! Start: https://acme.example/start")
    assert f"Unsubscribe: {https}" in body["plain"]
    html = body["html"]
    assert "display:none" in html
    assert "Three steps to your first follow-up" in html
    assert html.index("Three steps") < html.index("Hi Ana")  # the preview line comes first
    assert "https://acme.example/start" not in html  # click-tracked
    assert html.count(f'href="{PUBLIC_URL}/t/c/') == 1
    assert 'href="mailto:help@acme.example"' in html
    assert f'src="{PUBLIC_URL}/t/o/' in html  # the open pixel
    assert f'href="{https}"' in html  # the footer's unsubscribe link, untracked
    body_lines = hello.raw.decode().partition("\r\n\r\n")[2].split("\r\n")
    assert max(map(len, body_lines)) <= 76  # RFC 2045 quoted-printable lines

    # DKIM over the identity and the unsubscribe headers, verified against the published key
    signature = str(found["DKIM-Signature"])
    signed = re.search(r"h=([^;]+)", signature)
    assert signed is not None
    covered = {name.strip().lower() for name in signed.group(1).replace("\r\n", "").split(":")}
    assert {"from", "to", "subject", "date", "message-id", "list-unsubscribe",
            "list-unsubscribe-post", "reply-to"} <= covered  # fmt: skip
    assert "d=acme.example" in signature
    assert "s=nurture" in signature

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"nurture._domainkey.acme.example."
        return dkim_keys[1]

    assert dkim.verify(hello.raw, dnsfunc=dns)
    forged = hello.raw.replace(b"Subject: Hello Ana", b"Subject: Hello Bob")
    assert not dkim.verify(forged, dnsfunc=dns)

    # the transactional template: no footer, no unsubscribe headers
    receipt = by_subject["Your receipt"].message
    assert receipt["List-Unsubscribe"] is None
    assert receipt["List-Unsubscribe-Post"] is None
    assert receipt["From"] == "Acme <hello@acme.example>"  # the default sender
    receipt_parts = parts(receipt)
    assert "nsubscribe" not in receipt_parts["html"] + receipt_parts["plain"]
    assert "<html" in receipt_parts["html"]  # a fragment becomes a whole document


def test_tracking_follows_the_sequence_and_the_environment(
    tmp_path: Path, port: int, sink: RawSink
) -> None:
    untracked = SEQUENCE.replace("steps:", "tracking: {opens: false, clicks: true}\nsteps:")
    files = {"sequences/welcome.yaml": untracked, "templates/w/hello.html.j2": HELLO,
             "templates/w/receipt.html.j2": RECEIPT}  # fmt: skip
    runtime = runtime_for(tmp_path / "a", port, files)
    enroll(runtime, TestClient(create_app(lambda: runtime)))
    send_due(runtime)
    html = parts(next(a.message for a in sink.arrived if "Hello" in str(a.message["Subject"])))
    assert f"{PUBLIC_URL}/t/c/" in html["html"]
    assert "/t/o/" not in html["html"]

    sink.arrived.clear()
    off = runtime_for(tmp_path / "b", port, files, tracking="off")
    enroll(off, TestClient(create_app(lambda: off)))
    send_due(off)
    html = parts(next(a.message for a in sink.arrived if "Hello" in str(a.message["Subject"])))
    assert 'href="https://acme.example/start?a=1&amp;b=2"' in html["html"]
    assert "/t/c/" not in html["html"]
    assert "/t/o/" not in html["html"]


def test_a_notify_step_emails_the_internal_address_plainly(
    tmp_path: Path, port: int, sink: RawSink
) -> None:
    runtime = runtime_for(
        tmp_path, port,
        {"sequences/alerts.yaml": NOTIFY_SEQUENCE, "templates/internal/alert.html.j2": ALERT},
    )  # fmt: skip
    enroll(runtime, TestClient(create_app(lambda: runtime)))
    assert list(send_due(runtime).values()) == ["sent"]
    [arrived] = sink.arrived
    found = arrived.message
    assert arrived.rcpt_tos == ["sales@acme.example"]
    assert found["To"] == "sales@acme.example"
    assert found["Subject"] == "New signup: ana@example.com"
    assert found["List-Unsubscribe"] is None
    body = parts(found)
    assert 'href="https://crm.acme.example/x"' in body["html"]  # never tracked
    assert "/t/o/" not in body["html"]
    assert "nsubscribe" not in body["html"] + body["plain"]
    with runtime.database.connect() as connection:
        status = connection.execute(text("SELECT status FROM step_runs")).scalar_one()
    assert status == "sent"


def test_one_click_unsubscribe_from_a_delivered_email_suppresses_the_lead(
    welcome: Runtime, sink: RawSink
) -> None:
    client = TestClient(create_app(lambda: welcome))
    lead_id = enroll(welcome, client)
    send_due(welcome)
    hello = next(a.message for a in sink.arrived if a.message["List-Unsubscribe"])
    https, _ = unsubscribe_links(hello)
    # what Gmail or Yahoo POSTs for the unsubscribe button (RFC 8058)
    response = client.post(
        urlsplit(https).path,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    with welcome.database.connect() as connection:
        suppressions = connection.execute(
            text("SELECT suppressions FROM leads WHERE id = :id"), {"id": lead_id}
        ).scalar_one()
        kinds = connection.execute(text("SELECT type FROM events ORDER BY type")).scalars().all()
    assert "email" in (suppressions if isinstance(suppressions, dict) else eval_json(suppressions))
    assert "unsubscribed" in kinds


def eval_json(value: str) -> dict[str, str]:
    import json

    found = json.loads(value)
    assert isinstance(found, dict)
    return found


def test_outbox_versions_of_every_provider(tmp_path: Path) -> None:
    sequence = """
    name: All channels
    enroll: {on: signed_up}
    steps:
      - {id: mail, day: 1, email: w/hello}
      - {id: text, day: 1, sms: w/nudge}
      - {id: task, day: 1, crm_task: {subject: "Call {{ lead.first_name }}"}}
      - {id: alert, day: 1, notify: {email: sales@acme.example, template: internal/alert}}
    """
    runtime = runtime_for(
        tmp_path, None,
        {"sequences/all.yaml": sequence, "templates/w/hello.html.j2": HELLO,
         "templates/w/nudge.sms.j2": "Hi {{ lead.first_name }}", "templates/internal/alert.html.j2": ALERT},
    )  # fmt: skip
    client = TestClient(create_app(lambda: runtime))
    event = {"type": "signed_up", "lead": {"email": "ana@example.com", "first_name": "Ana",
             "phone": "+4915112345678", "consent": {"sms": True},
             "timezone": daytime_zone()}}  # fmt: skip
    response = client.post("/v1/events", json=event, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 202
    assert sorted(send_due(runtime).values()) == ["sent"] * 4
    outbox = runtime.config.outbox_dir
    emails = sorted((outbox / "email").glob("*.eml"))
    assert len(emails) == 2
    import email as email_package

    subjects = sorted(
        str(email_package.message_from_bytes(p.read_bytes())["Subject"]) for p in emails
    )
    assert subjects == ["Hello Ana", "New signup: ana@example.com"]
    [sms] = (outbox / "sms").glob("*.json")
    assert '"body": "Hi Ana"' in sms.read_text()
    [task] = (outbox / "crm" / "tasks").glob("*.json")
    assert '"subject": "Call Ana"' in task.read_text()


# -- one connection, reconnects -----------------------------------------------------------------


def test_many_messages_go_over_one_connection(port: int, sink: RawSink) -> None:
    sender = sender_for(port)
    for number in range(40):
        sender.send(message(number))
    sender.close()
    assert len(sink.arrived) == 40
    assert len(sink.peers) == 1
    assert sender.connections_opened == 1
    assert [str(a.message["Subject"]) for a in sink.arrived] == [f"Message {n}" for n in range(40)]


def test_a_connection_the_relay_dropped_while_idle_is_reopened(sink: RawSink) -> None:
    with smtp_server(sink, timeout=0.3) as port:  # the relay closes idle sessions
        sender = sender_for(port)
        sender.send(message(1))
        time.sleep(0.8)
        sender.send(message(2))  # no error: the stale connection is replaced
        sender.send(message(3))
    assert [str(a.message["Subject"]) for a in sink.arrived] == [
        "Message 1",
        "Message 2",
        "Message 3",
    ]
    assert len(sink.peers) == 2
    assert sender.connections_opened == 2


def test_a_421_before_the_transaction_reconnects_and_sends(port: int, sink: RawSink) -> None:
    sender = sender_for(port)
    sender.send(message(1))
    sink.mail = ["421 4.4.2 closing idle connection"]
    sender.send(message(2))
    assert [str(a.message["Subject"]) for a in sink.arrived] == ["Message 1", "Message 2"]
    assert len(sink.peers) == 2


def test_a_421_after_data_is_temporary_and_the_next_message_reconnects(
    port: int, sink: RawSink
) -> None:
    sender = sender_for(port)
    sink.replies = ["421 4.3.2 shutting down"]
    with pytest.raises(TemporaryError) as raised:
        sender.send(message(1))
    assert raised.value.code == "421"
    sender.send(message(2))
    assert [str(a.message["Subject"]) for a in sink.arrived] == ["Message 2"]
    assert sender.connections_opened == 2


# -- what retries, what fails, what suppresses ---------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "reply", "kind", "suppress"),
    [
        ("rcpt", "450 4.2.1 mailbox busy", TemporaryError, None),
        ("rcpt", "550 5.1.1 no such user", PermanentError, "bounced"),
        ("rcpt", "550 no such user here", PermanentError, "bounced"),
        ("rcpt", "553 5.1.3 bad address syntax", PermanentError, "bounced"),
        ("rcpt", "552 5.2.2 mailbox full", PermanentError, None),
        ("data", "451 4.3.0 try again later", TemporaryError, None),
        ("data", "550 5.1.1 unknown recipient", PermanentError, "bounced"),
        ("data", "550 5.7.1 message refused as spam", PermanentError, None),
        ("data", "554 5.6.0 message rejected", PermanentError, None),
        ("mail", "451 4.7.1 greylisted, come back later", TemporaryError, None),
        ("mail", "553 5.7.1 sender not allowed", PermanentError, None),  # our problem
    ],
)
def test_replies_retry_fail_or_suppress(
    port: int, sink: RawSink, stage: str, reply: str, kind: type[Exception], suppress: str | None
) -> None:
    script = {"rcpt": sink.rcpt, "data": sink.replies, "mail": sink.mail}[stage]
    script.append(reply)
    sender = sender_for(port)
    with pytest.raises(kind) as raised:
        sender.send(message(1))
    assert isinstance(raised.value, TemporaryError | PermanentError)
    assert raised.value.code == reply[:3]
    assert getattr(raised.value, "suppress", None) == suppress
    sender.send(message(2))  # the connection was reset and stays in use
    assert [str(a.message["Subject"]) for a in sink.arrived] == ["Message 2"]
    assert len(sink.peers) <= 1
    assert sender.connections_opened == 1


def test_timeouts_before_the_data_and_refused_connections_are_temporary(sink: RawSink) -> None:
    silent = socket.socket()  # accepts connections and never greets
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        with pytest.raises(TemporaryError) as raised:
            sender_for(silent.getsockname()[1], timeout=0.3).send(message(1))
        assert raised.value.code == "timeout"
    finally:
        silent.close()

    # the relay takes longer than we wait for its answer to the message's data: it may have
    # queued it already, so the send is uncertain, never retried (the step turns `unknown`)
    sink.data_delay = 1.0
    with smtp_server(sink) as port, pytest.raises(DeliveryUncertain):
        sender_for(port, timeout=0.3).send(message(1))

    with pytest.raises(TemporaryError) as raised:
        sender_for(free_port(), timeout=1.0).send(message(1))
    assert raised.value.code == "connection"


# -- TLS and login -------------------------------------------------------------------------------


def test_starttls_with_login_and_a_verified_certificate(
    sink: RawSink, certificates: Certificates
) -> None:
    secured = {"tls_context": server_tls(certificates), "require_starttls": True,
               "auth_required": True, "authenticator": password_checker("nurture", "s3cret")}  # fmt: skip
    with smtp_server(sink, **secured) as port:
        good = sender_for(port, starttls=True, username="nurture", password="s3cret",
                          ca_file=certificates.ca)  # fmt: skip
        good.send(message(1))
        good.send(message(2))
        assert good.connections_opened == 1

        wrong = sender_for(port, starttls=True, username="nurture", password="nope",
                           ca_file=certificates.ca)  # fmt: skip
        with pytest.raises(TemporaryError) as raised:
            wrong.send(message(3))
        assert raised.value.code == "auth"

        untrusted = sender_for(port, starttls=True, username="nurture", password="s3cret")
        with pytest.raises(TemporaryError, match="CERTIFICATE_VERIFY_FAILED"):
            untrusted.send(message(4))  # certificates are verified by default

        plain = sender_for(port, username="nurture", password="s3cret")
        with pytest.raises(TemporaryError):
            plain.send(message(5))  # the relay wants STARTTLS first
    assert [str(a.message["Subject"]) for a in sink.arrived] == ["Message 1", "Message 2"]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls_with_login(sink: RawSink, certificates: Certificates) -> None:
    with smtp_server(sink, ssl_context=server_tls(certificates), auth_required=True,
                     auth_require_tls=False,
                     authenticator=password_checker("nurture", "s3cret")) as port:  # fmt: skip
        sender = sender_for(port, use_ssl=True, username="nurture", password="s3cret",
                            ca_file=certificates.ca)  # fmt: skip
        sender.send(message(1))
        with pytest.raises(TemporaryError):
            sender_for(port, use_ssl=True, username="nurture", password="s3cret").send(message(2))
    assert [str(a.message["Subject"]) for a in sink.arrived] == ["Message 1"]


def test_settings_reach_the_sender(
    certificates: Certificates, dkim_keys: tuple[Path, bytes]
) -> None:
    config = Settings(
        email_backend="smtp", smtp_host="mail.acme.example", smtp_port=587,
        smtp_username="nurture", smtp_password="s3cret", smtp_starttls=True, smtp_timeout=12.5,
        smtp_ca_file=certificates.ca, dkim_domain="acme.example", dkim_selector="s1",
        dkim_private_key=dkim_keys[0].read_text(),  # PEM text works as well as a path
    )  # fmt: skip
    options = SmtpSender.from_settings(config).options
    assert (options.host, options.port, options.username, options.password) == (
        "mail.acme.example", 587, "nurture", "s3cret")  # fmt: skip
    assert options.starttls
    assert not options.use_ssl
    assert options.timeout == 12.5
    assert options.ca_file == certificates.ca
    assert options.dkim is not None
    assert options.dkim.selector == "s1"
    assert options.dkim.private_key.startswith(b"-----BEGIN")


# -- nurture preview --send-to -------------------------------------------------------------------


def test_preview_send_to_sends_through_the_configured_relay(
    tmp_path: Path, port: int, sink: RawSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = "name: Texts\nenroll: {on: signed_up}\nsteps:\n  - {id: nudge, day: 1, sms: t/nudge}\n"
    for name, content in {"sequences/welcome.yaml": SEQUENCE, "templates/w/hello.html.j2": HELLO,
                          "templates/w/receipt.html.j2": RECEIPT, "sequences/texts.yaml": texts,
                          "templates/t/nudge.sms.j2": "Hi {{ lead.first_name }}"}.items():  # fmt: skip
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    monkeypatch.chdir(tmp_path)
    for name, value in {"EMAIL_BACKEND": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port),
                        "EMAIL_FROM": "Acme <hello@acme.example>", "PUBLIC_URL": PUBLIC_URL,
                        "SECRET_KEY": "preview-secret"}.items():  # fmt: skip
        monkeypatch.setenv(f"NURTURE_{name}", value)
    settings.cache_clear()
    try:
        from worker.cli.main import app

        result = CliRunner().invoke(
            app, ["preview", "welcome", "hello", "--send-to", "me@acme.example"]
        )
        text = CliRunner().invoke(app, ["preview", "texts", "nudge", "--send-to", "+4915112345678"])
        missing = CliRunner().invoke(
            app, ["preview", "welcome", "nope", "--send-to", "x@acme.example"]
        )
    finally:
        settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "Subject: Hello Ana" in result.output  # the preview itself
    assert "sent: email to me@acme.example: Hello Ana" in result.output
    [arrived] = sink.arrived
    found = arrived.message
    assert arrived.rcpt_tos == ["me@acme.example"]
    assert found["Subject"] == "Hello Ana"
    assert found["From"] == "Sam at Acme <sam@acme.example>"
    assert found["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "Three steps to your first follow-up" in parts(found)["html"]
    # an SMS step goes to the configured text provider (here the outbox)
    assert text.exit_code == 0, text.output
    [sms] = (tmp_path / "outbox" / "sms").glob("*.json")
    assert '"to": "+4915112345678"' in sms.read_text()
    assert '"body": "Hi Ana"' in sms.read_text()
    assert missing.exit_code == 1
    assert "no step 'nope'" in missing.output
    assert len(sink.arrived) == 1


def test_the_mailto_unsubscribe_address_follows_the_settings() -> None:
    from worker.sending.email import list_unsubscribe, mailto_address

    # the inbox poller reads a mailbox, where unsubscribe mail arrives
    read = "imap.acme.example"
    assert mailto_address(Settings(email_from="Acme <hello@acme.example>", imap_host=read)) == (
        "unsubscribe@acme.example"
    )
    # nobody reads a mailbox: no address is offered that would silently drop the request
    assert mailto_address(Settings(email_from="Acme <hello@acme.example>")) is None
    assert mailto_address(Settings(unsubscribe_mailto="optout@lists.acme.example")) == (
        "optout@lists.acme.example"
    )
    assert (
        mailto_address(Settings(email_from="Acme <hello@acme.example>", unsubscribe_mailto="off"))
        is None
    )
    assert mailto_address(Settings()) is None  # nurture@localhost: no mailbox anyone could reach
    only_https = list_unsubscribe(Settings(secret_key=SecretStr("k")), "lead-1")["List-Unsubscribe"]
    assert only_https.startswith("<http")
    assert "mailto:" not in only_https


def test_a_non_ascii_address_goes_over_smtputf8_where_the_relay_takes_it(sink: RawSink) -> None:
    with smtp_server(sink) as port:
        sender_for(port).send(message(1, to="jürgen@müller.example"))
    [arrived] = sink.arrived
    assert arrived.rcpt_tos == ["jürgen@müller.example"]
    assert (
        "\r\nTo: jürgen@müller.example\r\n".encode() in arrived.raw
    )  # RFC 6532, not encoded words
    with smtp_server(sink, enable_SMTPUTF8=False) as port:
        with pytest.raises(PermanentError) as raised:
            sender_for(port).send(message(2, to="jürgen@müller.example"))
        assert raised.value.code == "smtputf8"
        sender_for(port).send(message(3))  # ASCII addresses still go
    assert len(sink.arrived) == 2
