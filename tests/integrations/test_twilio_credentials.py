"""Twilio refusing our credentials (a 401 or 403): the texts wait instead of failing, Twilio is
left alone for 15 minutes and then probed once, the refusal is logged at ERROR and shown as
`nurture_provider_held{provider="twilio"}`, and email goes on meanwhile. Through the real send
path, with our fake Twilio and a real SMTP server."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from integrations.ports import CredentialsRefused
from integrations.twilio import TwilioSender
from tests.helpers import daytime_zone, make_runtime
from tests.integrations import test_twilio
from tests.integrations.test_twilio import (
    ACCOUNT,
    OTHER_PHONE,
    PHONE,
    PUBLIC_URL,
    SMS_FROM,
    TOKEN,
    FakeTwilio,
    dispatch,
    error,
    steps,
)
from tests.library import greeting_template
from tests.servers.smtp import Sink
from worker.api.app import create_app
from worker.ingest.schemas import EventIn
from worker.ingest.service import ingest
from worker.runtime.process import Runtime, build
from worker.sending.holds import held_channels, note_refused
from worker.sending.service import send_step, send_steps
from worker.store.db import transaction
from worker.store.tables import StepRunRow

pytestmark = pytest.mark.integration
fake = test_twilio.fake  # the fixture: our fake Twilio

FILES = {
    "sequences/both.yaml": """
        name: Both
        enroll: {on: signed_up}
        steps:
          - {id: hello, day: 1, email: both/hello}
          - {id: nudge, day: 1, sms: both/nudge}
    """,
    "templates/both/hello.html.j2": greeting_template("Welcome"),
    "templates/both/nudge.sms.j2": "Hi {{ lead.first_name }}, reply YES for a call",
}


@dataclass
class Ticks:
    """The sender's monotonic clock, moved by the test."""

    at: float = 1000.0

    def __call__(self) -> float:
        return self.at


@pytest.fixture
def ticks() -> Ticks:
    return Ticks()


@pytest.fixture
def runtime(
    tmp_path: Path, database_url: str, smtp_sink: Sink, fake: FakeTwilio, ticks: Ticks
) -> Runtime:
    base = make_runtime(tmp_path, database_url, FILES, smtp_port=smtp_sink.port)
    config = base.config.model_copy(
        update={
            "sms_backend": "twilio",
            "public_url": PUBLIC_URL,
            "twilio_account_sid": ACCOUNT,
            "twilio_auth_token": SecretStr(TOKEN),
            "twilio_from": SMS_FROM,
            "twilio_api_base": fake.url,
        }
    )
    found = build(config)
    assert isinstance(found.text, TwilioSender)
    found.text = TwilioSender(found.text.options, clock=ticks)
    return found


def sign_up(runtime: Runtime, email: str, phone: str, at: datetime) -> None:
    lead = {"email": email, "phone": phone, "first_name": "Ana", "timezone": daytime_zone(),
            "consent": {"sms": True}}  # fmt: skip
    payload = {"type": "signed_up", "occurred_at": at.isoformat(), "lead": lead}
    with transaction(runtime.database) as session:
        ingest(session, runtime.engine, EventIn.model_validate(payload), at)


def metric(client: TestClient, provider: str) -> float | None:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'nurture_provider_held{{provider="{provider}"}} '):
            return float(line.split()[-1])
    return None


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_credential_holds_twilio_while_email_goes_on(
    runtime: Runtime,
    fake: FakeTwilio,
    smtp_sink: Sink,
    ticks: Ticks,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    now = datetime.now(UTC)
    sign_up(runtime, "ana@example.com", PHONE, now)
    fake.script = [error(status, 20003, "Authenticate")]
    with caplog.at_level(logging.ERROR, logger="nurture"):
        said = send_steps(runtime, dispatch(runtime, now), clock=lambda: now)
    assert sorted(s.split(" at ")[0] for s in said.values()) == ["retry", "sent"]
    [welcome] = smtp_sink.messages  # email went on
    assert welcome["To"] == "ana@example.com"
    nudge = steps(runtime)["both/nudge"]
    assert (nudge.status, nudge.attempts) == ("pending", 0)  # waits, spending no attempt
    assert nudge.due_at is not None
    assert timedelta(minutes=15) <= nudge.due_at - now <= timedelta(minutes=18)
    assert str(nudge.reason).startswith(f"retry: Twilio {status}")
    [alert] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "Twilio refused our credentials" in alert.getMessage()
    assert "NURTURE_TWILIO_AUTH_TOKEN" in alert.getMessage()

    # another text due meanwhile waits too, without a call to Twilio
    ticks.at += 60
    sign_up(runtime, "bo@example.com", OTHER_PHONE, now)
    due = dispatch(runtime, now + timedelta(minutes=1))
    said = send_steps(runtime, due, clock=lambda: now + timedelta(minutes=1))
    assert len(fake.received) == 1
    assert len(smtp_sink.messages) == 2
    [retry] = [s for s in said.values() if s.startswith("retry at")]
    assert "held for 840 s more" in retry
    waiting = [r for r in _rows(runtime) if r.channel == "sms"]
    assert [r.status for r in waiting] == ["pending", "pending"]
    assert all(r.due_at is not None and r.due_at > now + timedelta(minutes=14) for r in waiting)

    # the operator fixes the token; after the hold, one probe goes and the texts follow
    ticks.at += 900
    later = now + timedelta(minutes=19)
    said = send_steps(runtime, dispatch(runtime, later), clock=lambda: later)
    assert list(said.values()) == ["sent", "sent"]
    assert sorted(r["To"] for r in fake.received) == sorted([PHONE, PHONE, OTHER_PHONE])
    assert {r.status for r in _rows(runtime)} == {"sent"}


def test_a_held_provider_holds_every_worker_and_shows_in_the_metrics(
    runtime: Runtime, fake: FakeTwilio
) -> None:
    """What the hand-over asks (worker/sending/holds.py) once a worker has been refused."""
    now = datetime.now(UTC)
    with TestClient(create_app(lambda: runtime)) as client:
        assert metric(client, "twilio") is None  # never held: no series
        assert held_channels(runtime, ["sms", "email"], now) == {}
        with transaction(runtime.database) as session:
            note_refused(session, CredentialsRefused("401", provider="twilio"), now)
        assert metric(client, "twilio") == 1.0
        held = held_channels(runtime, ["sms", "whatsapp", "email", "crm_task"], now)
        assert sorted(held) == ["sms", "whatsapp"]
        assert held["sms"].retry_after == 900.0
        assert held["sms"].provider == "twilio"
        assert held_channels(runtime, ["sms"], now + timedelta(minutes=15)) == {}
        with transaction(runtime.database) as session:  # a hold that ran out
            note_refused(session, CredentialsRefused("401", provider="twilio"), now)
            stale = CredentialsRefused("401", provider="twilio", retry_after=1.0)
            note_refused(session, stale, now - timedelta(hours=1))  # never shortens it
        assert metric(client, "twilio") == 1.0
    assert fake.received == []


def test_a_worker_that_was_never_refused_leaves_a_held_twilio_alone(
    runtime: Runtime, fake: FakeTwilio, smtp_sink: Sink
) -> None:
    """Another worker was refused (the hold is in the database, not in this process): the
    texts wait for the hold's end without a call to Twilio, the email goes."""
    now = datetime.now(UTC)
    sign_up(runtime, "ana@example.com", PHONE, now)
    with transaction(runtime.database) as session:
        note_refused(session, CredentialsRefused("401", provider="twilio"), now)
    said = send_steps(runtime, dispatch(runtime, now), clock=lambda: now)
    assert fake.received == []
    assert len(smtp_sink.messages) == 1
    [retry] = [s for s in said.values() if s.startswith("retry at")]
    assert "twilio refused our credentials; held for 900 s more" in retry
    nudge = steps(runtime)["both/nudge"]
    assert (nudge.status, nudge.attempts) == ("pending", 0)
    assert nudge.due_at is not None
    assert nudge.due_at >= now + timedelta(minutes=15)


def test_a_text_the_claim_finds_held_waits_without_calling_twilio(
    runtime: Runtime, fake: FakeTwilio, ticks: Ticks
) -> None:
    now = datetime.now(UTC)
    sign_up(runtime, "ana@example.com", PHONE, now)
    sender = runtime.text
    assert isinstance(sender, TwilioSender)
    sender.held_until = ticks.at + 300  # another text was refused a minute ago in this process
    [hello, nudge] = sorted(dispatch(runtime, now), key=lambda s: s != _id(runtime, "hello"))
    assert send_step(runtime, hello, clock=lambda: now) == "sent"
    said = send_step(runtime, nudge, clock=lambda: now)
    assert said.startswith("retry at")
    assert "held for 300 s more" in said
    assert fake.received == []


def _rows(runtime: Runtime) -> list[StepRunRow]:
    with transaction(runtime.database) as session:
        return list(session.execute(select(StepRunRow)).scalars())


def _id(runtime: Runtime, step: str) -> str:
    return steps(runtime)[f"both/{step}"].id
