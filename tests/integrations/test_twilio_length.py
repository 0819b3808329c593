"""An SMS that a real lead's data makes longer than `nurture validate` allows (10 segments)
fails at send time, before Twilio is called, and says by how much."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers import daytime_zone
from tests.integrations import test_twilio
from tests.integrations.test_twilio import (
    FILES,
    PHONE,
    FakeTwilio,
    dispatch,
    messages,
    steps,
    twilio_runtime,
)
from worker.cli.main import app as cli
from worker.ingest.schemas import EventIn
from worker.ingest.service import ingest
from worker.runtime.process import Runtime
from worker.sending.service import send_step
from worker.store.db import transaction

pytestmark = pytest.mark.integration
fake = test_twilio.fake  # the fixture: our fake Twilio

# 1,500 characters and the first name: 10 GSM-7 parts for the sample lead (at most 1,530)
LONG = {**FILES, "templates/t/first.sms.j2": "{{ lead.first_name }} " + "x" * 1500}


def sign_up(runtime: Runtime, first_name: str, now: datetime) -> None:
    lead = {"phone": PHONE, "first_name": first_name, "timezone": daytime_zone(),
            "consent": {"sms": True}}  # fmt: skip
    payload = {"type": "signed_up", "occurred_at": now.isoformat(), "lead": lead}
    with transaction(runtime.database) as session:
        ingest(session, runtime.engine, EventIn.model_validate(payload), now)


@pytest.fixture
def long_runtime(tmp_path: Path, database_url: str, fake: FakeTwilio) -> Runtime:
    found = twilio_runtime(tmp_path, database_url, fake.url)
    (tmp_path / "templates/t/first.sms.j2").write_text(LONG["templates/t/first.sms.j2"])
    found.reload()
    return found


def test_validate_lets_the_template_through_for_the_sample_lead(
    long_runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 0, result.output


def test_a_lead_whose_name_makes_the_text_too_long_fails_before_twilio(
    long_runtime: Runtime, fake: FakeTwilio
) -> None:
    now = datetime.now(UTC)
    sign_up(long_runtime, "Maximiliane-Josephine-Alexandra", now)  # 1,532 characters: 11 parts
    [step] = dispatch(long_runtime, now)
    said = send_step(long_runtime, step, clock=lambda: now)
    assert said.startswith("failed ("), said
    assert "too_long: 11 SMS segments for this lead; at most 10 are allowed" in said
    row = steps(long_runtime)["texts/first"]
    assert row.status == "failed"
    assert fake.received == []  # refused where it is composed: Twilio never saw it
    assert messages(long_runtime) == []


def test_the_step_fails_with_reason_too_long(long_runtime: Runtime, fake: FakeTwilio) -> None:
    now = datetime.now(UTC)
    sign_up(long_runtime, "Maximiliane-Josephine-Alexandra", now)
    [step] = dispatch(long_runtime, now)
    send_step(long_runtime, step, clock=lambda: now)
    row = steps(long_runtime)["texts/first"]
    assert (row.status, row.reason) == ("failed", "too_long")


def test_a_short_name_sends_the_same_template(long_runtime: Runtime, fake: FakeTwilio) -> None:
    now = datetime.now(UTC)
    sign_up(long_runtime, "Ana", now)  # 1,504 characters: 10 parts, the limit
    [step] = dispatch(long_runtime, now)
    assert send_step(long_runtime, step, clock=lambda: now) == "sent"
    [request] = fake.received
    assert len(request["Body"]) == 1504
