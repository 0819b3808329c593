"""`GET /v1/leads/{id}` shows every enrollment, running and ended, newest first, each with all
its steps — on SQLite and PostgreSQL, over the sample sequences."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from worker.api.app import create_app
from worker.config import Settings
from worker.runtime.process import build
from worker.store.migrate import upgrade

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ANA = {"email": "ana@example.com", "phone": "+4915112345678", "consent": {"sms": True}}


@pytest.fixture
def client(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    upgrade(database_url)
    runtime = build(
        Settings(
            home=tmp_path / ".nurture",
            database_url=database_url,
            sequences_dir=ROOT / "sequences",
            templates_dir=ROOT / "templates",
            outbox_dir=tmp_path / "outbox",
            api_tokens=TOKEN,
        )
    )
    with TestClient(create_app(lambda: runtime)) as test_client:
        yield test_client


def enroll(client: TestClient, sequence: str, **properties: Any) -> str:
    body = {"lead": ANA, "sequence": sequence, "properties": properties}
    response = client.post("/v1/enrollments", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    return str(response.json()["lead_id"])


def test_the_lead_shows_ended_enrollments_with_their_steps_newest_first(
    client: TestClient,
) -> None:
    lead_id = enroll(client, "trial")
    exited = client.post(f"/v1/leads/{lead_id}/exit", json={"sequence": "trial"}, headers=AUTH)
    assert exited.status_code == 200
    # a webinar that started three days ago: every step is already past, so it completes at once
    started = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=0).isoformat()
    enroll(client, "webinar", starts_at=started)
    enroll(client, "cart-abandonment", cart_token="c1")

    response = client.get(f"/v1/leads/{lead_id}", headers=AUTH)
    assert response.status_code == 200
    enrollments = response.json()["enrollments"]
    assert [(e["sequence"], e["status"]) for e in enrollments] == [
        ("cart-abandonment", "active"),
        ("webinar", "completed"),
        ("trial", "exited"),
    ]
    cart, webinar, trial = enrollments
    assert [(s["step"], s["status"], s["reason"]) for s in cart["steps"]] == [
        ("reminder", "pending", None),
        ("still-thinking", "pending", None),
        ("discount", "pending", None),
    ]
    assert all(s["due_at"] for s in cart["steps"])
    assert cart["key"] == "c1"
    assert cart["ended_at"] is None
    assert [(s["step"], s["status"], s["reason"]) for s in webinar["steps"]] == [
        ("day-before", "skipped", "past"),
        ("hour-before", "skipped", "past"),
        ("replay", "skipped", "past"),
    ]
    assert webinar["ended_at"] is not None
    assert [s["step"] for s in trial["steps"]] == [
        "welcome",
        "tour",
        "case-study",
        "upgrade-offer",
        "upgrade-nudge",
    ]
    assert {(s["status"], s["reason"]) for s in trial["steps"]} == {("skipped", "exited")}
    assert [s["variant"] is not None for s in trial["steps"]] == [
        False,
        False,
        True,
        False,
        False,
    ]
    assert trial["exit_reason"] == "manual"
    assert all(s["sent_at"] is None for e in enrollments for s in e["steps"])
    # the list of leads shows the same lead
    listed = client.get("/v1/leads?email=ana@example.com", headers=AUTH).json()["leads"]
    assert listed[0]["enrollments"] == enrollments
