"""The early answer: `Prefer: respond-async` (or a source set in NURTURE_RESPOND_ASYNC_SOURCES)
answers 202 with the event's id once it is held durably; the event is then applied from the
intake in arrival order, and a repeated id answers 200 `duplicate` whether its first copy is
still queued or already applied."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.helpers import make_runtime
from tests.library import TRIAL, unsubscribe_template
from tests.servers.processes import wait_for
from worker.api.app import create_app
from worker.ingest.early import drain, drain_queued
from worker.ingest.pipes import Drainer
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.intake import queued_count

pytestmark = pytest.mark.integration

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EARLY = {**AUTH, "Prefer": "respond-async"}


def signup(email: str, id_: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"type": "trial_started", "lead": {"email": email}}
    if id_ is not None:
        found["id"] = id_
    return found


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    found = make_runtime(
        tmp_path,
        database_url,
        {"sequences/trial.yaml": TRIAL, "templates/t/welcome.html.j2": unsubscribe_template("Hi")},
    )
    found.config = found.config.model_copy(update={"api_tokens": TOKEN})
    yield found
    found.database.dispose()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(lambda: runtime)) as test_client:
        yield test_client


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> None:
    """No drainer in the API process: queued events wait for an explicit drain."""
    monkeypatch.setattr(Drainer, "kick", lambda self: None)


def queued(runtime: Runtime) -> int:
    with transaction(runtime.database) as session:
        return queued_count(session)


def stored(runtime: Runtime, event_id: str) -> tuple[Any, ...] | None:
    with runtime.database.connect() as connection:
        row = connection.execute(
            text("SELECT lead_id, type, source FROM events WHERE id = :id"), {"id": event_id}
        ).first()
    return tuple(row) if row is not None else None


def test_an_early_answer_carries_the_id_and_the_event_is_applied(
    client: TestClient, runtime: Runtime
) -> None:
    answer = client.post("/v1/events", json=signup("ana@example.com", "e1"), headers=EARLY)
    assert answer.status_code == 202
    assert answer.headers["Preference-Applied"] == "respond-async"
    body = answer.json()
    assert body == {"event_id": body["event_id"], "status": "queued"}
    wait_for(lambda: stored(runtime, body["event_id"]) is not None, 20, "the event applied")
    lead_id, type_, source = stored(runtime, body["event_id"]) or ()
    assert (type_, source) == ("trial_started", "api")
    assert queued(runtime) == 0
    # applied now: a repeat answers as SPEC §4 says, with the lead
    again = client.post("/v1/events", json=signup("ana@example.com", "e1"), headers=EARLY)
    assert again.status_code == 200
    assert again.json() == {
        "event_id": body["event_id"],
        "lead_id": lead_id,
        "duplicate": True,
        "enrolled": [],
        "exited": [],
    }
    plain = client.post("/v1/events", json=signup("ana@example.com", "e1"), headers=AUTH)
    assert plain.status_code == 200
    assert plain.json()["lead_id"] == lead_id


@pytest.mark.usefixtures("held")
def test_a_repeat_of_a_queued_event_is_a_duplicate(client: TestClient, runtime: Runtime) -> None:
    first = client.post("/v1/events", json=signup("ana@example.com", "e1"), headers=EARLY)
    assert first.status_code == 202
    event_id = first.json()["event_id"]
    again = client.post("/v1/events", json=signup("bo@example.com", "e1"), headers=EARLY)
    assert again.status_code == 200
    assert again.json() == {"event_id": event_id, "status": "queued", "duplicate": True}
    # without the header too, alone or in a batch: the queued copy keeps its id
    plain = client.post("/v1/events", json=signup("bo@example.com", "e1"), headers=AUTH)
    assert plain.status_code == 200
    assert plain.json() == again.json()
    batch = client.post("/v1/events/batch", json={"events": [signup("cy@example.com", "e1")]},
                        headers=AUTH)  # fmt: skip
    assert batch.json()["results"] == [again.json()]
    assert stored(runtime, event_id) is None
    # and once the first is applied, SPEC §4's duplicate
    assert queued(runtime) == 1
    assert drain(runtime).applied == 1
    plain = client.post("/v1/events", json=signup("bo@example.com", "e1"), headers=AUTH)
    assert plain.status_code == 200
    assert plain.json()["event_id"] == event_id
    assert stored(runtime, event_id) is not None


@pytest.mark.usefixtures("held")
def test_queued_events_are_applied_in_arrival_order(client: TestClient, runtime: Runtime) -> None:
    lead = {"email": "ana@example.com"}
    for number, type_ in enumerate(
        ["pricing_page_viewed", "trial_started", "subscription_upgraded"]
    ):
        body = {"type": type_, "lead": lead, "occurred_at": f"2026-11-22T10:0{number}:00Z"}
        assert client.post("/v1/events", json=body, headers=EARLY).status_code == 202
    assert drain_queued(runtime) == 3
    with runtime.database.connect() as connection:
        statuses = connection.execute(text("SELECT status FROM enrollments")).all()
    assert [tuple(s) for s in statuses] == [("exited",)]


@pytest.mark.usefixtures("held")
def test_the_batch_endpoint_queues_each_valid_item(client: TestClient, runtime: Runtime) -> None:
    items = [signup("ana@example.com", "a"), signup("not-an-email"), signup("bo@example.com")]
    answer = client.post("/v1/events/batch", json={"events": items}, headers=EARLY)
    assert answer.status_code == 207
    assert answer.headers["Preference-Applied"] == "respond-async"
    first, bad, last = answer.json()["results"]
    assert first["status"] == last["status"] == "queued"
    assert bad["error"]["fields"][0]["field"] == "lead.email"
    assert drain(runtime).applied == 2
    assert stored(runtime, first["event_id"]) is not None
    assert stored(runtime, last["event_id"]) is not None


def test_a_source_set_to_answer_early_needs_no_header(runtime: Runtime) -> None:
    runtime.config = runtime.config.model_copy(update={"respond_async_sources": "form, shopify"})
    with TestClient(create_app(lambda: runtime)) as client:
        answer = client.post("/v1/webhooks/forms/signup", json={"email": "ana@example.com"})
        assert answer.status_code == 202
        assert "Preference-Applied" not in answer.headers
        event_id = answer.json()["event_id"]
        assert answer.json()["status"] == "queued"
        wait_for(lambda: stored(runtime, event_id) is not None, 20, "the form event applied")
        assert (stored(runtime, event_id) or ())[2] == "form"
        # /v1/events is not a source set to answer early: the SPEC §4 answer
        plain = client.post("/v1/events", json=signup("bo@example.com"), headers=AUTH)
        assert plain.status_code == 202
        assert plain.json()["enrolled"] == ["trial"]
