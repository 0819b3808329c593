"""Every state-changing support action through the API is recorded with who (`api`, `crm`),
when and why, in the transaction of the change; the lead's export carries them; erasing keeps
the fact and the lead's id, nothing of the person. And `POST /v1/leads/{id}/exit` without a
sequence ends every active enrollment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.helpers import make_runtime
from tests.library import TRIAL, WELCOME, unsubscribe_template
from worker.api.app import create_app
from worker.runtime.process import Runtime

pytestmark = pytest.mark.integration

TOKEN = "audit-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ANA = {"email": "ana@example.com", "first_name": "Ana"}


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Runtime:
    found = make_runtime(
        tmp_path,
        database_url,
        {
            "sequences/trial.yaml": TRIAL,
            "sequences/welcome.yaml": WELCOME,
            "templates/t/welcome.html.j2": unsubscribe_template("Hi"),
            "templates/w/hello.html.j2": unsubscribe_template("Hello"),
        },
    )
    found.config = found.config.model_copy(update={"api_tokens": TOKEN})
    return found


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(lambda: runtime)) as test_client:
        yield test_client


def actions(runtime: Runtime) -> list[tuple[Any, ...]]:
    with runtime.database.connect() as connection:
        found = connection.execute(
            text("SELECT actor, action, target, reason, lead_id FROM actions ORDER BY id")
        )
        return [tuple(row) for row in found]


def signed_up_twice(client: TestClient) -> str:
    for kind in ("trial_started", "signed_up"):
        answer = client.post("/v1/events", json={"type": kind, "lead": ANA}, headers=AUTH)
        assert answer.status_code == 202, answer.text
    return str(answer.json()["lead_id"])


def test_exit_without_a_sequence_ends_every_enrollment(
    client: TestClient, runtime: Runtime
) -> None:
    lead_id = signed_up_twice(client)
    left = client.post(f"/v1/leads/{lead_id}/exit", json={"reason": "asked"}, headers=AUTH)
    assert left.status_code == 200
    exits = [(e["sequence"], e["action"], e["reason"]) for e in left.json()["timeline"]]
    assert ("trial", "exit", "asked") in exits
    assert ("welcome", "exit", "asked") in exits
    view = client.get(f"/v1/leads/{lead_id}", headers=AUTH).json()
    assert all(e["status"] == "exited" for e in view["enrollments"])
    again = client.post(f"/v1/leads/{lead_id}/exit", json={}, headers=AUTH)
    assert again.status_code == 404
    assert again.json()["error"]["message"] == "the lead is not enrolled in any sequence"
    assert actions(runtime) == [("api", "exit", None, "asked", lead_id)]  # the 404 wrote none


def test_support_actions_are_recorded_and_exported(client: TestClient, runtime: Runtime) -> None:
    lead_id = signed_up_twice(client)
    paused = client.post(f"/v1/leads/{lead_id}/pause", json={"reason": "on holiday"}, headers=AUTH)
    assert paused.status_code == 200
    assert client.post(f"/v1/leads/{lead_id}/resume", json={}, headers=AUTH).status_code == 200
    left = client.post(f"/v1/leads/{lead_id}/exit", json={"sequence": "welcome"}, headers=AUTH)
    assert left.status_code == 200
    crm = client.post(
        "/v1/webhooks/crm",
        json={"action": "pause", "lead_id": lead_id, "reason": "sales call"},
        headers=AUTH,
    )
    assert crm.status_code == 200, crm.text
    assert actions(runtime) == [
        ("api", "pause", None, "on holiday", lead_id),
        ("api", "resume", None, None, lead_id),
        ("api", "exit", "welcome", "manual", lead_id),
        ("crm", "pause", None, "sales call", lead_id),
    ]
    exported = client.get(f"/v1/leads/{lead_id}/export", headers=AUTH).json()
    assert [(a["actor"], a["action"], a["reason"]) for a in exported["actions"]] == [
        ("crm", "pause", "sales call"),
        ("api", "exit", "manual"),
        ("api", "resume", None),
        ("api", "pause", "on holiday"),
    ]  # newest first
    assert all(a["at"] for a in exported["actions"])
    assert "scoring_steps" in exported


def test_a_manual_enrollment_is_recorded_once_even_when_replayed(
    client: TestClient, runtime: Runtime
) -> None:
    body = {"lead": ANA, "sequence": "welcome"}
    headers = {**AUTH, "Idempotency-Key": "k-1"}
    first = client.post("/v1/enrollments", json=body, headers=headers)
    assert first.status_code == 201
    assert client.post("/v1/enrollments", json=body, headers=headers).status_code == 201
    lead_id = first.json()["lead_id"]
    assert actions(runtime) == [("api", "enroll", "welcome", None, lead_id)]


def test_erasing_is_recorded_without_the_person(client: TestClient, runtime: Runtime) -> None:
    lead_id = signed_up_twice(client)
    assert client.delete(f"/v1/leads/{lead_id}", headers=AUTH).status_code == 204
    assert client.delete(f"/v1/leads/{lead_id}", headers=AUTH).status_code == 204
    assert actions(runtime) == [("api", "erase", None, None, lead_id)]
    with runtime.database.connect() as connection:
        dump = " ".join(
            str(value) for row in connection.execute(text("SELECT * FROM actions")) for value in row
        )
    assert "ana" not in dump.lower()
