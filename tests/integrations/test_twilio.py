"""Texts through the real send path to a small fake Twilio of our own (the contract mock cannot
script failures): retries with backoff, permanent refusals that suppress, consent, STOP and
START, WhatsApp's session window, status callbacks out of order, and the validate-time limit
on SMS length."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]
from typer.testing import CliRunner

from integrations.twilio import TwilioSender
from tests.helpers import daytime_zone, free_port, make_runtime
from worker.api.app import create_app
from worker.cli.main import app as cli
from worker.ingest.schemas import EventIn
from worker.ingest.service import ingest
from worker.runtime.process import Runtime, build
from worker.sending.record import MAX_ATTEMPTS
from worker.sending.service import send_step
from worker.store.db import transaction
from worker.store.steps import claim_due, sweep
from worker.store.tables import LeadRow, MessageRow, StepRunRow

pytestmark = pytest.mark.integration

ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "twilio-auth-token"
API_TOKEN = "support-token"
PUBLIC_URL = "https://nurture.example.com"
SMS_FROM = "+15005550006"
WHATSAPP_FROM = "+14155238886"
PHONE = "+4915112345678"
OTHER_PHONE = "+4915187654321"
CONTENT = "HX" + "00112233445566778899aabbccddeeff"
TEXTS = """
name: Texts
enroll: {on: signed_up}
steps:
  - {id: first, day: 1, sms: t/first}
  - {id: second, day: 2, sms: t/first}
"""
CHAT = f"""
name: Chat
enroll: {{on: chat_started}}
steps:
  - id: offer
    day: 1
    whatsapp: {{content_sid: {CONTENT}, variables: {{"1": "{{{{ lead.first_name }}}}"}}}}
  - {{id: hello, after: 1m, whatsapp: t/hello}}
"""
FILES = {
    "sequences/texts.yaml": TEXTS,
    "sequences/chat.yaml": CHAT,
    "templates/t/first.sms.j2": "Hi {{ lead.first_name }}, your trial ends soon. STOP to opt out",
    "templates/t/hello.whatsapp.j2": "Thanks for writing, {{ lead.first_name }}!",
}


# -- the fake ---------------------------------------------------------------------------------

DROP = (0, "")
"""Read the request, answer nothing, close: Twilio may or may not have taken the message."""


def error(status: int, code: int, message: str) -> tuple[int, str]:
    """An error the way Twilio's API writes one."""
    info = f"https://www.twilio.com/docs/errors/{code}"
    body = {"code": code, "message": message, "more_info": info, "status": status}
    return status, json.dumps(body)


@dataclass
class FakeTwilio:
    """Twilio's Messages API as far as the sender needs it: keeps what arrived, answers from
    `script` in order, then accepts everything."""

    url: str = ""
    received: list[dict[str, str]] = field(default_factory=list)
    script: list[tuple[int, str]] = field(default_factory=list)
    sids: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, request: dict[str, str]) -> tuple[int, str]:
        with self.lock:
            self.received.append(request)
            if self.script:
                return self.script.pop(0)
            sid = "SM" + uuid.uuid4().hex
            self.sids.append(sid)
        body = {"sid": sid, "account_sid": ACCOUNT, "to": request.get("To"),
                "from": request.get("From"), "body": request.get("Body"),
                "status": "queued", "num_segments": "2", "direction": "outbound-api"}  # fmt: skip
        return 201, json.dumps(body)


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    found = FakeTwilio()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = dict(parse_qsl(self.rfile.read(length).decode()))
            request["path"] = self.path
            request["authorization"] = self.headers.get("Authorization", "")
            status, body = found.answer(request)
            if status == 0:
                self.close_connection = True
                return
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body.encode())))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    found.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()


# -- the project ------------------------------------------------------------------------------


def twilio_runtime(folder: Path, database_url: str, api_base: str) -> Runtime:
    base = make_runtime(folder, database_url, FILES)
    config = base.config.model_copy(
        update={
            "sms_backend": "twilio",
            "public_url": PUBLIC_URL,
            "api_tokens": API_TOKEN,
            "twilio_account_sid": ACCOUNT,
            "twilio_auth_token": SecretStr(TOKEN),
            "twilio_from": SMS_FROM,
            "twilio_whatsapp_from": WHATSAPP_FROM,
            "twilio_api_base": api_base,
        }
    )
    return build(config)


@pytest.fixture
def runtime(tmp_path: Path, fake: FakeTwilio) -> Runtime:
    return twilio_runtime(tmp_path, f"sqlite:///{tmp_path / 'nurture.db'}", fake.url)


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(lambda: runtime)) as test_client:
        yield test_client


def post(runtime: Runtime, kind: str, at: datetime, phone: str = PHONE, **consent: bool) -> str:
    lead = {"phone": phone, "first_name": "Ana", "timezone": daytime_zone(),
            "consent": consent or {"sms": True}}  # fmt: skip
    payload = {"type": kind, "occurred_at": at.isoformat(), "lead": lead}
    with transaction(runtime.database) as session:
        return ingest(session, runtime.engine, EventIn.model_validate(payload), at).lead_id


def frozen(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def dispatch(runtime: Runtime, now: datetime) -> list[str]:
    with transaction(runtime.database) as session:
        return claim_due(session, now, 100)


def steps(runtime: Runtime) -> dict[str, StepRunRow]:
    with transaction(runtime.database) as session:
        found = session.execute(select(StepRunRow)).scalars().all()
        return {f"{row.sequence_id}/{row.step_id}": row for row in found}


def messages(runtime: Runtime) -> list[MessageRow]:
    with transaction(runtime.database) as session:
        return list(session.execute(select(MessageRow)).scalars().all())


def lead_row(runtime: Runtime, lead_id: str) -> LeadRow:
    with transaction(runtime.database) as session:
        found = session.get(LeadRow, lead_id)
        assert found is not None
        return found


def twilio_post(client: TestClient, path: str, params: dict[str, str]) -> dict[str, Any]:
    """A callback signed the way Twilio signs it, over the public URL."""
    url = f"{PUBLIC_URL}/v1/webhooks/twilio/{path}"
    signature = RequestValidator(TOKEN).compute_signature(url, params)
    response = client.post(
        f"/v1/webhooks/twilio/{path}", data=params, headers={"X-Twilio-Signature": signature}
    )
    assert response.status_code == 200, response.text
    return response.json() if path == "status" else {}


def inbound(client: TestClient, body: str, sender: str = PHONE) -> None:
    params = {"MessageSid": "SM" + uuid.uuid4().hex, "AccountSid": ACCOUNT, "From": sender,
              "To": SMS_FROM, "Body": body, "NumMedia": "0"}  # fmt: skip
    twilio_post(client, "inbound", params)


def lead_view(client: TestClient, lead_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/leads/{lead_id}", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


# -- retries ----------------------------------------------------------------------------------


def test_a_429_is_retried_with_backoff_and_the_text_sent_once(
    tmp_path: Path, fake: FakeTwilio, database_url: str
) -> None:
    runtime = twilio_runtime(tmp_path, database_url, fake.url)
    assert isinstance(runtime.text, TwilioSender)  # NURTURE_SMS_BACKEND=twilio picks it
    now = datetime.now(UTC)
    post(runtime, "signed_up", now)
    fake.script = [error(429, 20429, "Too Many Requests")]
    [step] = dispatch(runtime, now)
    assert send_step(runtime, step, clock=lambda: now).startswith("retry at")
    waiting = steps(runtime)["texts/first"]
    assert (waiting.status, waiting.attempts) == ("pending", 1)
    assert waiting.due_at is not None
    assert timedelta(seconds=23) < waiting.due_at - now < timedelta(seconds=37)
    assert dispatch(runtime, now) == []  # not due before its backoff

    later = now + timedelta(minutes=1)
    assert dispatch(runtime, later) == [step]
    assert send_step(runtime, step, clock=lambda: later) == "sent"
    assert send_step(runtime, step, clock=lambda: later).startswith("not claimable")
    assert len(fake.received) == 2
    first, second = fake.received
    assert first == second  # the same request again, nothing else
    assert first["path"] == f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
    assert first["authorization"].startswith("Basic ")
    assert (first["To"], first["From"]) == (PHONE, SMS_FROM)
    assert first["Body"] == "Hi Ana, your trial ends soon. STOP to opt out"
    assert first["StatusCallback"] == f"{PUBLIC_URL}/v1/webhooks/twilio/status?step_run={step}"
    sent = steps(runtime)["texts/first"]
    assert (sent.status, sent.attempts, sent.provider_message_id) == ("sent", 2, fake.sids[0])
    [message] = messages(runtime)
    assert message.segments == 2
    assert (message.channel, message.to, message.provider_message_id) == (
        "sms", PHONE, fake.sids[0],
    )  # fmt: skip


def test_a_5xx_storm_backs_off_longer_each_time_then_fails_with_the_error(
    runtime: Runtime, fake: FakeTwilio
) -> None:
    now = datetime.now(UTC)
    post(runtime, "signed_up", now)
    fake.script = [error(500, 20500, "Internal Server Error")]
    fake.script += [error(503, 20503, "Service Unavailable")] * (MAX_ATTEMPTS - 2)
    fake.script += [(502, "<html>Bad gateway</html>")]  # a proxy's page, not Twilio's JSON
    waits: list[timedelta] = []
    clock = now
    for attempt in range(1, MAX_ATTEMPTS + 1):
        [step] = dispatch(runtime, clock)
        said = send_step(runtime, step, clock=frozen(clock))
        row = steps(runtime)["texts/first"]
        assert row.attempts == attempt
        if attempt < MAX_ATTEMPTS:
            assert said.startswith("retry at"), said
            assert row.due_at is not None
            waits.append(row.due_at - clock)
            clock = row.due_at
    assert said.startswith(f"failed after {MAX_ATTEMPTS} attempts"), said
    assert waits == sorted(waits)  # 30 s, 1 min, 2 min … each longer, jitter or not
    assert waits[-1] > 4 * waits[0]
    failed = steps(runtime)["texts/first"]
    assert (failed.status, failed.reason) == ("failed", "502")
    assert len(fake.received) == MAX_ATTEMPTS  # one request per attempt, never two
    assert dispatch(runtime, clock + timedelta(hours=2)) == []
    assert messages(runtime) == []


def test_a_refused_connection_is_retried_and_a_lost_answer_is_never_resent(
    runtime: Runtime, fake: FakeTwilio
) -> None:
    now = datetime.now(UTC)
    post(runtime, "signed_up", now)
    working = runtime.text
    assert isinstance(working, TwilioSender)
    runtime.text = TwilioSender(
        replace(working.options, api_base=f"http://127.0.0.1:{free_port()}")
    )
    [step] = dispatch(runtime, now)
    assert send_step(runtime, step, clock=lambda: now).startswith("retry at")
    assert steps(runtime)["texts/first"].status == "pending"

    runtime.text = working
    fake.script = [DROP]  # Twilio read the request and the answer was lost
    later = now + timedelta(minutes=2)
    [step] = dispatch(runtime, later)
    said = send_step(runtime, step, clock=lambda: later)
    assert said.startswith("error (no answer from Twilio after sending"), said
    assert steps(runtime)["texts/first"].status == "sending"
    with transaction(runtime.database) as session:
        assert sweep(session, later + timedelta(minutes=11)).unknown == 1
    assert steps(runtime)["texts/first"].status == "unknown"
    assert dispatch(runtime, later + timedelta(hours=1)) == []
    assert len(fake.received) == 1  # the request that may have been taken, and no other


# -- permanent refusals and suppression -------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message", "suppressed"),
    [
        (21610, "Attempt to send to unsubscribed recipient", "stop"),
        (21211, "The 'To' number +4915112345678 is not a valid phone number.", "invalid_number"),
    ],
)
def test_a_permanent_refusal_fails_the_step_and_suppresses_sms(
    runtime: Runtime, fake: FakeTwilio, client: TestClient, code: int, message: str,
    suppressed: str,
) -> None:  # fmt: skip
    now = datetime.now(UTC)
    lead_id = post(runtime, "signed_up", now)
    fake.script = [error(400, code, message)]
    [step] = dispatch(runtime, now)
    assert send_step(runtime, step, clock=lambda: now) == f"failed ({code})"
    failed = steps(runtime)["texts/first"]
    assert (failed.status, failed.reason, failed.attempts) == ("failed", str(code), 1)
    shown = lead_view(client, lead_id)
    assert shown["suppressions"] == {"sms": suppressed}
    [first] = next(e for e in shown["enrollments"] if e["sequence"] == "texts")["steps"][:1]
    assert (first["status"], first["reason"]) == ("failed", str(code))

    tomorrow = now + timedelta(days=1)  # the next text is stopped before it reaches Twilio
    [second] = dispatch(runtime, tomorrow)
    assert send_step(runtime, second, clock=lambda: tomorrow) == "skipped (suppressed)"
    assert len(fake.received) == 1
    assert messages(runtime) == []


def test_status_callbacks_never_move_back_and_a_late_refusal_suppresses(
    runtime: Runtime, fake: FakeTwilio, client: TestClient
) -> None:
    now = datetime.now(UTC)
    lead_id = post(runtime, "signed_up", now)
    [step] = dispatch(runtime, now)
    assert send_step(runtime, step, clock=lambda: now) == "sent"
    [sid] = fake.sids
    callback = f"{PUBLIC_URL}/v1/webhooks/twilio/status?step_run={step}"
    assert fake.received[0]["StatusCallback"] == callback

    def status(value: str, sid: str = sid, **extra: str) -> dict[str, Any]:
        params = {"MessageSid": sid, "MessageStatus": value, "AccountSid": ACCOUNT, **extra}
        return twilio_post(client, "status", params)

    assert status("delivered")["events"] == ["sms_delivered"]
    assert status("sent")["changed"] is False  # Twilio's callbacks arrive in any order
    assert status("queued")["changed"] is False
    assert [m["status"] for m in lead_view(client, lead_id)["messages"]] == ["delivered"]

    # a messaging service accepts first and reports STOP later, in the callback
    tomorrow = now + timedelta(days=1)
    [second] = dispatch(runtime, tomorrow)
    assert send_step(runtime, second, clock=lambda: tomorrow) == "sent"
    late = status("failed", fake.sids[1], ErrorCode="21610")
    assert late["events"] == ["sms_failed"]
    shown = lead_view(client, lead_id)
    assert shown["suppressions"] == {"sms": "stop"}
    assert sorted(m["status"] for m in shown["messages"]) == ["delivered", "failed"]


# -- consent, STOP and START ------------------------------------------------------------------


def test_without_sms_consent_the_step_finishes_suppressed_and_consent_is_recorded(
    runtime: Runtime, fake: FakeTwilio
) -> None:
    now = datetime.now(UTC)
    refused = post(runtime, "signed_up", now, phone=OTHER_PHONE, email=True)
    [step] = dispatch(runtime, now)
    assert send_step(runtime, step, clock=lambda: now) == "skipped (suppressed)"
    assert fake.received == []

    given = post(runtime, "signed_up", now, sms=True)
    consent = lead_row(runtime, given).consent["sms"]
    assert consent["granted"] is True
    assert consent["source"] == "api"
    assert datetime.fromisoformat(consent["at"]) == now
    assert "sms" not in lead_row(runtime, refused).consent


def test_stop_suppresses_texts_and_start_lifts_it(
    runtime: Runtime, fake: FakeTwilio, client: TestClient
) -> None:
    now = datetime.now(UTC)
    lead_id = post(runtime, "signed_up", now)
    inbound(client, " Stop ")
    assert lead_view(client, lead_id)["suppressions"] == {"sms": "stop"}
    [step] = dispatch(runtime, now)
    assert send_step(runtime, step, clock=lambda: now) == "skipped (suppressed)"
    assert fake.received == []

    inbound(client, "START")
    assert lead_view(client, lead_id)["suppressions"] == {}
    tomorrow = now + timedelta(days=1)
    [second] = dispatch(runtime, tomorrow)
    assert send_step(runtime, second, clock=lambda: tomorrow) == "sent"
    assert [r["To"] for r in fake.received] == [PHONE]


# -- WhatsApp ---------------------------------------------------------------------------------


def test_whatsapp_templates_go_by_content_sid_and_free_form_needs_the_session(
    runtime: Runtime, fake: FakeTwilio, client: TestClient
) -> None:
    now = datetime.now(UTC)
    inbound(client, "Hi, is the offer still on?", sender=f"whatsapp:{OTHER_PHONE}")
    for phone in (PHONE, OTHER_PHONE):  # only the second has written in the last 24 hours
        post(runtime, "chat_started", now, phone=phone, whatsapp=True)
    offers = dispatch(runtime, now)
    assert [send_step(runtime, s, clock=lambda: now) for s in offers] == ["sent", "sent"]
    later = now + timedelta(minutes=2)
    said = sorted(send_step(runtime, s, clock=lambda: later) for s in dispatch(runtime, later))
    assert said == ["sent", "skipped (whatsapp_window)"]

    templates = [r for r in fake.received if "ContentSid" in r]
    assert sorted(r["To"] for r in templates) == [f"whatsapp:{PHONE}", f"whatsapp:{OTHER_PHONE}"]
    for request in templates:
        assert request["From"] == f"whatsapp:{WHATSAPP_FROM}"
        assert request["ContentSid"] == CONTENT
        assert json.loads(request["ContentVariables"]) == {"1": "Ana"}
        assert "Body" not in request
    [free_form] = [r for r in fake.received if "Body" in r]
    assert free_form["To"] == f"whatsapp:{OTHER_PHONE}"
    assert free_form["From"] == f"whatsapp:{WHATSAPP_FROM}"
    assert free_form["Body"] == "Thanks for writing, Ana!"
    assert free_form["StatusCallback"].startswith(
        f"{PUBLIC_URL}/v1/webhooks/twilio/status?step_run="
    )
    assert len(fake.received) == 3


# -- validate ---------------------------------------------------------------------------------


def test_an_sms_over_ten_segments_is_refused_by_validate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, text in FILES.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    # 10 GSM-7 parts are 1,530 characters; the name makes it one more
    (tmp_path / "templates/t/first.sms.j2").write_text("x" * 1527 + " {{ lead.first_name }}")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == (
        "sequences/texts.yaml:5:30: sms: templates/t/first.sms.j2 is 11 SMS segments for the "
        "sample lead; at most 10 are allowed: shorten it"
    )
    (tmp_path / "templates/t/first.sms.j2").write_text("x" * 1527 + " {{ lead.first_name[:1] }}")
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 0, result.output
