"""Retention on SQLite and PostgreSQL: old events deleted while a late retry of one still
answers `duplicate` with the original ids and changes nothing, the engine's state untouched,
consent changes kept, a retention shorter than a goal window refused, the export saying what
was pruned; pushed CRM changes deleted, pending and refused ones kept."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import text, update
from sqlmodel import col

from tests.helpers import make_runtime
from tests.ingest.test_webhooks import SHOPIFY_SECRET, checkout, shopify
from tests.library import unsubscribe_template
from worker.api.app import create_app
from worker.crm.repository import add_change
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.locks import lock_lead
from worker.store.tables import CrmChangeRow, EventRow, LeadRow
from worker.store.worlds import load_world
from worker.support.retention import prune_expired

pytestmark = pytest.mark.integration

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TRIAL = """
name: Trial
enroll: {on: trial_started}
exit_on: [subscription_upgraded]
goal: {event: subscription_upgraded, within: 30d}
steps:
  - {id: welcome, day: 1, email: t/welcome}
  - {id: tour, day: 3, email: t/welcome, skip_if: "'pricing_viewed' in events"}
"""
SCORING = """
kind: scoring
points: {pricing_viewed: 10}
segments: {warm: 5, cold: 0}
"""
LEAD = {"email": "ana@example.com"}
STARTED = {"id": "evt_start", "type": "trial_started", "lead": LEAD}


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Runtime:
    found = make_runtime(
        tmp_path,
        database_url,
        {
            "sequences/trial.yaml": TRIAL,
            "sequences/scoring.yaml": SCORING,
            "templates/t/welcome.html.j2": unsubscribe_template("Hi"),
        },
    )
    found.config = found.config.model_copy(
        update={
            "api_tokens": TOKEN,
            "event_retention_days": 35,
            "idempotency_retention_days": 60,
            "crm_outbox_retention_days": 30,
            "shopify_webhook_secret": SecretStr(SHOPIFY_SECRET),
        }
    )
    return found


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(lambda: runtime)) as test_client:
        yield test_client


def counts(runtime: Runtime) -> dict[str, int]:
    tables = ("leads", "events", "event_keys", "enrollments", "step_runs", "crm_outbox")
    with runtime.database.connect() as connection:
        return {
            table: int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
            for table in tables
        }


def age_everything(runtime: Runtime, days: int) -> None:
    """As if every event had arrived, and every lead been created, `days` ago."""
    then = datetime.now(UTC) - timedelta(days=days)
    with transaction(runtime.database) as session:
        session.execute(update(EventRow).values(received_at=then))
        session.execute(update(LeadRow).values(created_at=then))


def world_of(runtime: Runtime, lead_id: str) -> Any:
    with transaction(runtime.database) as session:
        row = lock_lead(session, lead_id)
        assert row is not None
        return load_world(session, row, datetime.now(UTC)).world


def test_a_late_retry_of_a_pruned_event_answers_duplicate_and_changes_nothing(
    client: TestClient, runtime: Runtime
) -> None:
    first = client.post("/v1/events", json=STARTED, headers=AUTH)
    assert first.status_code == 202
    original = first.json()
    age_everything(runtime, 40)
    stored = counts(runtime)["events"]  # the event and what the worker emitted on it
    pruned = prune_expired(runtime, datetime.now(UTC))
    assert (pruned.events, pruned.problem) == (stored, None)
    before = counts(runtime)
    assert (before["events"], before["event_keys"]) == (0, 1)

    again = client.post("/v1/events", json=STARTED, headers=AUTH)
    assert again.status_code == 200
    assert again.json() == {
        "event_id": original["event_id"],
        "lead_id": original["lead_id"],
        "duplicate": True,
        "enrolled": [],
        "exited": [],
    }
    batch = client.post("/v1/events/batch", json={"events": [STARTED]}, headers=AUTH)
    assert batch.status_code == 207
    assert batch.json()["results"][0]["duplicate"] is True
    assert batch.json()["results"][0]["event_id"] == original["event_id"]
    assert counts(runtime) == before

    # the key itself goes once the idempotency retention is over
    later = prune_expired(runtime, datetime.now(UTC) + timedelta(days=21))
    assert later.keys == 1
    assert counts(runtime)["event_keys"] == 0


def test_shopify_retrying_a_delivery_whose_event_was_pruned_changes_nothing(
    client: TestClient, runtime: Runtime
) -> None:
    first = shopify(client, "checkouts/create", checkout(), "w-late")
    assert first.status_code == 202
    age_everything(runtime, 40)
    assert prune_expired(runtime, datetime.now(UTC)).events >= 1
    before = counts(runtime)
    retried = shopify(client, "checkouts/create", checkout(), "w-late")  # hours later
    assert retried.status_code == 200
    assert retried.json()["duplicate"] is True
    assert retried.json()["event_id"] == first.json()["event_id"]
    assert counts(runtime) == before


def test_pruning_keeps_what_the_engine_decides_from_and_the_consent_changes(
    client: TestClient, runtime: Runtime
) -> None:
    lead_id = client.post("/v1/events", json=STARTED, headers=AUTH).json()["lead_id"]
    for kind in ("pricing_viewed", "unsubscribed"):
        posted = client.post("/v1/events", json={"type": kind, "lead": LEAD}, headers=AUTH)
        assert posted.status_code == 202
    age_everything(runtime, 40)
    before = world_of(runtime, lead_id)
    assert before.lead.score.entries
    assert "pricing_viewed" in before.enrollments[0].events_seen

    stored = counts(runtime)["events"]
    assert prune_expired(runtime, datetime.now(UTC)).events == stored - 1  # all but unsubscribed
    assert world_of(runtime, lead_id) == before  # history, events seen, score: all on the rows
    exported = client.get(f"/v1/leads/{lead_id}/export", headers=AUTH).json()
    assert [e["type"] for e in exported["events"]] == ["unsubscribed"]  # the consent record
    assert set(exported["pruned"]) == {"events_before"}

    upgraded = {"type": "subscription_upgraded", "lead": LEAD}
    answer = client.post("/v1/events", json=upgraded, headers=AUTH).json()
    assert answer["exited"] == ["trial"]
    fresh = client.post("/v1/events", json={**STARTED, "id": "evt_new"}, headers=AUTH)
    assert fresh.status_code == 202  # a new id is no duplicate


def test_a_retention_shorter_than_a_goal_window_is_refused_and_prunes_nothing(
    client: TestClient, runtime: Runtime
) -> None:
    client.post("/v1/events", json=STARTED, headers=AUTH)
    age_everything(runtime, 40)
    stored = counts(runtime)["events"]
    runtime.config = runtime.config.model_copy(update={"event_retention_days": 30})
    pruned = prune_expired(runtime, datetime.now(UTC))
    assert pruned.events == 0
    assert pruned.problem is not None
    assert "NURTURE_EVENT_RETENTION_DAYS=30" in pruned.problem
    assert "'trial' (30d)" in pruned.problem
    assert counts(runtime)["events"] == stored


def test_crm_outbox_pruning_deletes_only_changes_pushed_long_ago(runtime: Runtime) -> None:
    now = datetime.now(UTC)
    with transaction(runtime.database) as session:
        for number in range(5):
            add_change(session, f"lead-{number}", "contact", {"n": number}, now)
    states = [
        ("pushed", 40),  # pruned
        ("pushed", 5),  # pushed lately: kept
        ("pending", None),  # still to push: kept, however old
        ("failed", 40),  # refused by the CRM: kept for the record
        ("pending", None),
    ]
    with transaction(runtime.database) as session:
        ids = [row[0] for row in session.execute(text("SELECT id FROM crm_outbox ORDER BY id"))]
        for row_id, (status, days) in zip(ids, states, strict=True):
            pushed = None if days is None else now - timedelta(days=days)
            session.execute(
                update(CrmChangeRow)
                .where(col(CrmChangeRow.id) == row_id)
                .values(status=status, pushed_at=pushed)
            )
    assert prune_expired(runtime, now).crm_changes == 1
    with runtime.database.connect() as connection:
        left = connection.execute(text("SELECT id, status FROM crm_outbox ORDER BY id")).all()
    assert [(row_id, status) for row_id, status in left] == [
        (row_id, status) for row_id, (status, _) in zip(ids[1:], states[1:], strict=True)
    ]
