"""The HTTP API over a real database: events, batches, support endpoints, and every kind of bad
input answered with a 4xx that names the field and writes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.helpers import make_runtime
from tests.library import TRIAL, unsubscribe_template
from worker.api.app import create_app
from worker.runtime.process import Runtime

pytestmark = pytest.mark.integration

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EVENT = {
    "id": "evt_123",
    "type": "trial_started",
    "occurred_at": "2026-11-22T10:00:00Z",
    "lead": {
        "email": "Ana@Example.com",
        "phone": "+4915112345678",
        "external_id": "crm-42",
        "first_name": "Ana",
        "last_name": "Ito",
        "timezone": "Europe/Berlin",
        "consent": {"email": True, "sms": True},
        "attributes": {"plan": "pro"},
    },
    "properties": {"cart_token": "c1"},
}


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    found = make_runtime(
        tmp_path,
        f"sqlite:///{tmp_path / 'n.db'}",
        {"sequences/trial.yaml": TRIAL, "templates/t/welcome.html.j2": unsubscribe_template("Hi")},
    )
    found.config = found.config.model_copy(update={"api_tokens": TOKEN})
    return found


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(lambda: runtime)) as test_client:
        yield test_client


def counts(runtime: Runtime) -> dict[str, int]:
    with runtime.database.connect() as connection:
        return {
            table: int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
            for table in ("leads", "events", "enrollments", "step_runs")
        }


NOTHING = {"leads": 0, "events": 0, "enrollments": 0, "step_runs": 0}


def test_an_event_enrolls_and_a_repeated_id_changes_nothing(
    client: TestClient, runtime: Runtime
) -> None:
    first = client.post("/v1/events", json=EVENT, headers=AUTH)
    assert first.status_code == 202
    body = first.json()
    assert list(body) == ["event_id", "lead_id", "duplicate", "enrolled", "exited"]
    assert (body["duplicate"], body["enrolled"], body["exited"]) == (False, ["trial"], [])
    again = client.post("/v1/events", json=EVENT, headers=AUTH)
    assert again.status_code == 200
    assert again.json() == {**body, "duplicate": True, "enrolled": []}
    assert counts(runtime) == {"leads": 1, "events": 1, "enrollments": 1, "step_runs": 2}
    upgraded = {**EVENT, "id": "evt_124", "type": "subscription_upgraded"}
    assert client.post("/v1/events", json=upgraded, headers=AUTH).json()["exited"] == ["trial"]


def test_a_new_identity_fills_a_gap_but_never_replaces_one(client: TestClient) -> None:
    lead_id = client.post("/v1/events", json=EVENT, headers=AUTH).json()["lead_id"]
    other = {**EVENT, "id": "evt_9", "lead": {"email": "ana@example.com", "external_id": "x-1"}}
    assert client.post("/v1/events", json=other, headers=AUTH).json()["lead_id"] == lead_id
    assert client.get(f"/v1/leads/{lead_id}", headers=AUTH).json()["external_id"] == "crm-42"


def test_the_lead_is_found_by_each_identity_and_shows_its_timeline(client: TestClient) -> None:
    lead_id = client.post("/v1/events", json=EVENT, headers=AUTH).json()["lead_id"]
    for query in ("email=ana@example.com", "phone=%2B4915112345678", "external_id=crm-42"):
        found = client.get(f"/v1/leads?{query}", headers=AUTH).json()["leads"]
        assert [lead["id"] for lead in found] == [lead_id]
    assert client.get("/v1/leads?email=nobody@example.com", headers=AUTH).json() == {"leads": []}
    lead = client.get(f"/v1/leads/{lead_id}", headers=AUTH).json()
    assert lead["email"] == "ana@example.com"
    [enrollment] = lead["enrollments"]
    assert enrollment["sequence"] == "trial"
    assert [s["step"] for s in enrollment["steps"]] == ["welcome", "tour"]
    assert lead["events"][0]["type"] == "trial_started"
    assert client.get("/v1/leads/nope", headers=AUTH).status_code == 404


def test_support_pauses_resumes_exits_and_enrolls(client: TestClient) -> None:
    lead_id = client.post("/v1/events", json=EVENT, headers=AUTH).json()["lead_id"]
    paused = client.post(f"/v1/leads/{lead_id}/pause", json={"reason": "on holiday"}, headers=AUTH)
    assert paused.status_code == 200
    assert [e["action"] for e in paused.json()["timeline"]] == ["pause"]
    assert client.get(f"/v1/leads/{lead_id}", headers=AUTH).json()["enrollments"][0]["paused"]
    resumed = client.post(f"/v1/leads/{lead_id}/resume", json={}, headers=AUTH)
    assert "resume" in [e["action"] for e in resumed.json()["timeline"]]
    left = client.post(f"/v1/leads/{lead_id}/exit", json={"sequence": "trial"}, headers=AUTH)
    assert left.status_code == 200
    again = client.post(f"/v1/leads/{lead_id}/exit", json={"sequence": "trial"}, headers=AUTH)
    assert again.status_code == 404
    enrolled = client.post(
        "/v1/enrollments", json={"lead": {"email": "bo@example.com"}, "sequence": "trial"},
        headers=AUTH,
    )  # fmt: skip
    assert enrolled.status_code == 201
    twice = client.post(
        "/v1/enrollments", json={"lead": {"email": "bo@example.com"}, "sequence": "trial"},
        headers=AUTH,
    )  # fmt: skip
    assert twice.status_code == 409


def test_a_batch_applies_valid_items_and_answers_each_in_order(
    client: TestClient, runtime: Runtime
) -> None:
    bad = {**EVENT, "id": "evt_bad", "lead": {"email": "not-an-email"}}
    second = {**EVENT, "id": "evt_2", "lead": {"email": "bo@example.com"}}
    response = client.post("/v1/events/batch", json={"events": [EVENT, bad, second]}, headers=AUTH)
    assert response.status_code == 207
    first, error, last = response.json()["results"]
    assert first["enrolled"] == ["trial"]
    assert error["error"]["fields"][0]["field"] == "lead.email"
    assert last["enrolled"] == ["trial"]
    assert counts(runtime)["leads"] == 2
    not_a_batch = client.post("/v1/events/batch", json=[EVENT], headers=AUTH)
    assert not_a_batch.status_code == 422
    too_many = client.post("/v1/events/batch", json={"events": [EVENT] * 1001}, headers=AUTH)
    assert too_many.status_code == 422
    assert counts(runtime)["leads"] == 2


def _with(path: str, value: Any) -> dict[str, Any]:
    """EVENT with one field (dotted path) replaced; a value of ... removes it."""
    event: dict[str, Any] = json.loads(json.dumps(EVENT))
    *parents, last = path.split(".")
    node = event
    for part in parents:
        node = node[part]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return event


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_with("type", "Trial Started"), "type"),
        (_with("type", ...), "type"),
        (_with("lead.email", "ana@"), "lead.email"),
        (_with("lead.phone", "12345"), "lead.phone"),
        (_with("lead.timezone", "Mars/Olympus"), "lead.timezone"),
        (_with("lead.colour", "red"), "lead.colour"),
        (_with("surprise", 1), "surprise"),
        (_with("occurred_at", "yesterday"), "occurred_at"),
        (_with("occurred_at", "2026-11-22T10:00:00"), "occurred_at"),
        (_with("properties", "not an object"), "properties"),
        (_with("lead.consent", {"email": "maybe"}), "lead.consent.email"),
        ({**EVENT, "lead": {"first_name": "Ana"}}, "lead"),
        (_with("lead.first_name", "A\u0000B"), "lead.first_name"),
    ],
)
def test_bad_input_names_the_field_and_writes_nothing(
    client: TestClient, runtime: Runtime, body: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/events", json=body, headers=AUTH)
    assert response.status_code == 422
    fields = [f["field"] for f in response.json()["error"]["fields"]]
    assert field in fields, response.json()
    assert counts(runtime) == NOTHING


def test_malformed_json_oversized_bodies_and_bad_tokens(
    client: TestClient, runtime: Runtime
) -> None:
    malformed = client.post(
        "/v1/events", content=b'{"type": "x",', headers={**AUTH, "Content-Type": "application/json"}
    )
    assert malformed.status_code == 422
    assert malformed.json()["error"]["code"] == "invalid"
    huge = {**EVENT, "properties": {"blob": "x" * (1024 * 1024)}}
    assert client.post("/v1/events", json=huge, headers=AUTH).status_code == 413
    assert client.post("/v1/events", json=EVENT).status_code == 401
    wrong = client.post("/v1/events", json=EVENT, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "unauthorized"
    assert client.get("/v1/leads?email=a@b.c").status_code == 401
    assert counts(runtime) == NOTHING
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["database"] == "ok"


def test_lead_lookup_refuses_unknown_and_repeated_parameters(client: TestClient) -> None:
    unknown = client.get("/v1/leads?emial=a@example.com", headers=AUTH)
    assert unknown.status_code == 422
    assert unknown.json()["error"]["fields"][0]["field"] == "query.emial"
    repeated = client.get("/v1/leads?email=a@example.com&email=b@example.com", headers=AUTH)
    assert repeated.status_code == 422
    assert client.get("/v1/leads", headers=AUTH).status_code == 422
