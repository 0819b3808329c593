"""GET /metrics: every series of docs/metrics.md appears and moves when its thing happens —
events posted to the API, sends to a real SMTP server, a provider that fails, throttles or
never answers, a step skipped, a sequence paused, a CRM push, heartbeats, a held provider —
with label values from bounded sets and no personal data. On PostgreSQL; the process counters
are this test process's own, so each check reads a difference."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from integrations.ports import (
    DeliveryUncertain,
    EmailMessage,
    RateLimited,
    SendResult,
    TemporaryError,
)
from tests.helpers import fresh_database, make_runtime, samples
from tests.library import WELCOME, greeting_template, welcome_project
from tests.servers.smtp import Sink
from worker.api.app import create_app
from worker.api.metrics import render
from worker.crm.service import push_pending
from worker.runtime.heartbeat import Heart
from worker.runtime.process import Runtime
from worker.sending.dispatch import sweep_steps
from worker.sending.service import send_steps
from worker.store.db import transaction
from worker.store.holds import hold_provider
from worker.store.steps import claim_due
from worker.store.switches import write_switch

pytestmark = pytest.mark.integration
TOKEN = "metrics-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Failing:
    """An email provider that answers with `error` (or never answers)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def send(self, message: EmailMessage) -> SendResult:
        raise self.error


@pytest.fixture
def runtime(tmp_path: Path, postgres_url: str, smtp_sink: Sink) -> Runtime:
    files = welcome_project(WELCOME, greeting_template("Hello"))
    found = make_runtime(tmp_path, fresh_database(postgres_url), files, smtp_port=smtp_sink.port)
    found.config = found.config.model_copy(update={"api_tokens": TOKEN})
    return found


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(lambda: runtime)) as test_client:
        yield test_client


class Scrapes:
    """Scrapes of /metrics, each compared with the one before."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.last = self.scrape()

    def scrape(self) -> dict[str, float]:
        response = self.client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return samples(response.text)

    def moved(self) -> dict[str, float]:
        """What changed since the last scrape (new series count from 0)."""
        now = self.scrape()
        changed = {k: v - self.last.get(k, 0.0) for k, v in now.items()}
        self.last = now
        return {k: v for k, v in changed.items() if v}


def signup(client: TestClient, lead: dict[str, Any], kind: str = "signed_up") -> None:
    response = client.post("/v1/events", json={"type": kind, "lead": lead}, headers=AUTH)
    assert response.status_code == 202, response.text


def send_due(runtime: Runtime, now: datetime | None = None) -> dict[str, str]:
    at = now or datetime.now(UTC)
    with transaction(runtime.database) as session:
        leased = claim_due(session, at, 100)
    return send_steps(runtime, leased, clock=lambda: at)


def test_every_series_appears_and_moves_when_its_thing_happens(
    runtime: Runtime, client: TestClient, smtp_sink: Sink
) -> None:
    scrapes = Scrapes(client)
    assert scrapes.last["nurture_database_up"] == 1.0
    assert scrapes.last["nurture_event_intake_pending"] == 0.0
    assert scrapes.last['nurture_processes_alive{role="worker"}'] == 0.0
    assert 'nurture_heartbeat_timestamp_seconds{role="worker"}' not in scrapes.last

    # events in: a known type by its name, an invented one as `other`; the work waits
    signup(client, {"email": "ana@example.com", "first_name": "Ana"})
    signup(client, {"email": "ana@example.com"}, kind="made_up_by_a_caller")
    moved = scrapes.moved()
    assert moved['nurture_events_ingested_total{source="api",type="signed_up"}'] == 1.0
    assert moved['nurture_events_ingested_total{source="api",type="other"}'] == 1.0
    assert scrapes.last['nurture_steps_due{channel="email"}'] == 1.0
    later = samples(client.get("/metrics").text)  # the step is due now: it has waited a bit
    assert later["nurture_oldest_due_step_age_seconds"] >= 0.0
    assert scrapes.last["nurture_crm_backlog"] >= 1.0  # the new contact, for the CRM

    # a send through the real SMTP path
    assert list(send_due(runtime).values()) == ["sent"]
    assert len(smtp_sink.messages) == 1
    moved = scrapes.moved()
    assert moved['nurture_sends_total{channel="email",result="sent"}'] == 1.0
    assert moved['nurture_send_duration_seconds_count{channel="email"}'] == 1.0
    assert moved['nurture_provider_request_duration_seconds_count{provider="smtp"}'] == 1.0
    assert scrapes.last['nurture_steps_due{channel="email"}'] == 0.0

    # a provider that fails, throttles, or never answers (in doubt: unknown once swept)
    for number, error in enumerate(
        [
            TemporaryError("relay unreachable", code="connection"),
            RateLimited("too many", code="429", retry_after=30),
            DeliveryUncertain("no answer after the data"),
        ]
    ):
        signup(client, {"email": f"lead{number}@example.com"})
        runtime.email = Failing(error)
        send_due(runtime)
    moved = scrapes.moved()
    assert moved['nurture_provider_errors_total{kind="connection",provider="smtp"}'] == 1.0
    assert moved['nurture_provider_errors_total{kind="timeout",provider="smtp"}'] == 1.0
    assert moved['nurture_provider_throttled_total{provider="smtp"}'] == 1.0
    assert moved['nurture_sends_total{channel="email",result="deferred"}'] == 2.0
    assert moved['nurture_provider_request_duration_seconds_count{provider="smtp"}'] == 3.0
    assert scrapes.last['nurture_steps_held{reason="retry"}'] == 2.0
    swept = sweep_steps(runtime, datetime.now(UTC) + timedelta(hours=1))
    assert swept.unknown == 1
    moved = scrapes.moved()
    assert moved['nurture_sends_total{channel="email",result="unknown"}'] == 1.0
    assert scrapes.last["nurture_steps_unknown"] == 1.0

    # a step skipped (no address), and steps held by a paused sequence
    signup(client, {"external_id": "crm-77"})
    send_due(runtime)
    assert scrapes.moved()['nurture_steps_skipped_total{reason="no_address"}'] == 1.0
    with transaction(runtime.database) as session:
        write_switch(session, "sequence:welcome", "paused", datetime.now(UTC), "test")
    signup(client, {"email": "held@example.com"})
    assert list(send_due(runtime).values()) == ["waits (sequence_paused)"]
    scrapes.moved()
    assert scrapes.last['nurture_steps_held{reason="sequence_paused"}'] == 1.0

    # the CRM push empties the backlog; its lag is the oldest change's age
    assert scrapes.last["nurture_crm_backlog"] > 0
    lag = samples(_render(runtime, datetime.now(UTC) + timedelta(minutes=10)))
    assert lag["nurture_crm_sync_lag_seconds"] >= 590
    pushed = push_pending(runtime.database, runtime.crm, datetime.now(UTC), provider="outbox")
    assert pushed.pushed > 0
    moved = scrapes.moved()
    assert moved['nurture_provider_request_duration_seconds_count{provider="outbox"}'] >= 1.0
    assert scrapes.last["nurture_crm_backlog"] == 0.0
    assert scrapes.last["nurture_crm_sync_lag_seconds"] == 0.0

    # heartbeats of a worker and a beat; a provider held after refusing our credentials
    Heart(lambda: runtime.database, "worker").beat()
    Heart(lambda: runtime.database, "beat").beat()
    now = datetime.now(UTC)
    with transaction(runtime.database) as session:
        hold_provider(session, "twilio", now + timedelta(minutes=15), now)
    found = scrapes.scrape()
    for role in ("worker", "beat"):
        assert found[f'nurture_processes_alive{{role="{role}"}}'] == 1.0
        stamp = found[f'nurture_heartbeat_timestamp_seconds{{role="{role}"}}']
        assert abs(stamp - now.timestamp()) < 60
    assert found['nurture_provider_held{provider="twilio"}'] == 1.0
    gone = samples(_render(runtime, now + timedelta(minutes=20)))
    assert gone['nurture_processes_alive{role="worker"}'] == 0.0  # silent for 20 minutes


def test_label_values_are_bounded_and_carry_no_personal_data(
    runtime: Runtime, client: TestClient
) -> None:
    for number in range(5):
        signup(client, {"email": f"person{number}@example.com"}, kind=f"invented_{number}")
    signup(client, {"email": "ana@example.com", "phone": "+14155550100"})
    send_due(runtime)
    body = client.get("/metrics").text
    labels = set(re.findall(r'="([^"]*)"', body))
    assert not [value for value in labels if "@" in value or "+1415" in value]
    assert not [value for value in labels if value.startswith("invented_")]
    with transaction(runtime.database) as session:
        ids = {row[0] for row in session.execute(text("SELECT id FROM leads"))}
    assert not labels & ids
    assert samples(body)['nurture_events_ingested_total{source="api",type="other"}'] >= 5.0


def _render(runtime: Runtime, at: datetime) -> bytes:
    return render(lambda: runtime, lambda: at)
