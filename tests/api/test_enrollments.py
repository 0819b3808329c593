"""`POST /v1/enrollments` and its batch over the sample sequences, on SQLite and PostgreSQL:
keyed (cart) and anchored (webinar) enrollments from the request's properties, the re-entry
rule, the Idempotency-Key, and bad input answered with the field and nothing written."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from worker.api.app import create_app
from worker.config import Settings
from worker.ingest.schemas import LeadIn
from worker.runtime.process import Runtime, build
from worker.store.migrate import upgrade
from worker.support.enrollments import Answered, ManualEnrollment, enroll_by_hand

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ANA = {"email": "ana@example.com", "first_name": "Ana", "timezone": "Europe/Berlin"}
TABLES = ("leads", "events", "enrollments", "step_runs", "enrollment_requests")
NOTHING = dict.fromkeys(TABLES, 0)


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Runtime:
    """The sample project (sequences/ and templates/ of the repository) on a fresh database."""
    upgrade(database_url)
    return build(
        Settings(
            home=tmp_path / ".nurture",
            database_url=database_url,
            sequences_dir=ROOT / "sequences",
            templates_dir=ROOT / "templates",
            outbox_dir=tmp_path / "outbox",
            api_tokens=TOKEN,
        )
    )


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(lambda: runtime)) as test_client:
        yield test_client


def rows(runtime: Runtime, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with runtime.database.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql), params)]


def counts(runtime: Runtime) -> dict[str, int]:
    return {table: rows(runtime, f"SELECT count(*) FROM {table}")[0][0] for table in TABLES}


def steps(runtime: Runtime, enrollment_id: str) -> dict[str, tuple[str, datetime | None]]:
    found = rows(
        runtime,
        "SELECT step_id, status, due_at FROM step_runs WHERE enrollment_id = :e",
        e=enrollment_id,
    )
    return {step: (status, _utc(due)) for step, status, due in found}


def _utc(value: datetime | str | None) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite gives text without a zone)."""
    if value is None:
        return None
    found = datetime.fromisoformat(value) if isinstance(value, str) else value
    return found.replace(tzinfo=UTC) if found.tzinfo is None else found.astimezone(UTC)


def enroll(client: TestClient, body: dict[str, Any], **headers: str) -> Any:
    return client.post("/v1/enrollments", json=body, headers={**AUTH, **headers})


def cart(token: str | None, lead: dict[str, Any] = ANA) -> dict[str, Any]:
    properties = {} if token is None else {"cart_token": token, "checkout_url": "https://s/c"}
    return {"lead": lead, "sequence": "cart-abandonment", "properties": properties}


# -- keyed and anchored ---------------------------------------------------------------------------


def test_a_keyed_enrollment_takes_its_key_from_the_properties(
    client: TestClient, runtime: Runtime
) -> None:
    first = enroll(client, cart("c1"))
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["enrollment"]["sequence"] == "cart-abandonment"
    assert body["enrollment"]["key"] == "c1"
    assert body["enrollment"]["status"] == "active"
    assert body["timeline"][0]["action"] == "enroll"
    enrolled_at = datetime.fromisoformat(body["enrollment"]["enrolled_at"])
    assert steps(runtime, body["enrollment"]["id"]) == {
        "reminder": ("pending", enrolled_at + timedelta(hours=1)),
        "still-thinking": ("pending", enrolled_at + timedelta(hours=24)),
        "discount": ("pending", enrolled_at + timedelta(hours=48)),
    }
    # a second cart is an enrollment of its own; the same cart again is refused by its rule
    assert enroll(client, cart("c2")).status_code == 201
    again = enroll(client, cart("c1"))
    assert again.status_code == 409
    assert again.json()["error"] == {
        "code": "conflict",
        "message": "ana@example.com is already enrolled in cart-abandonment for key c1 and "
        "cart-abandonment says reenroll: after_exit",
    }
    found = rows(runtime, "SELECT key, status FROM enrollments ORDER BY key")
    assert found == [("c1", "active"), ("c2", "active")]
    [(stored,)] = rows(runtime, "SELECT event FROM enrollments WHERE key = 'c1'")
    event = json.loads(stored) if isinstance(stored, str) else stored
    assert event["properties"] == {"cart_token": "c1", "checkout_url": "https://s/c"}


def test_a_keyed_sequence_without_its_key_is_a_422_naming_the_field(
    client: TestClient, runtime: Runtime
) -> None:
    for properties in ({}, {"cart_token": ""}, {"other": "c1"}):
        response = enroll(client, {**cart(None), "properties": properties})
        assert response.status_code == 422, response.text
        [field] = response.json()["error"]["fields"]
        assert field["field"] == "properties.cart_token"
        assert "event.properties.cart_token" in field["message"]
    assert counts(runtime) == NOTHING


def test_an_anchored_enrollment_times_its_steps_from_the_given_start(
    client: TestClient, runtime: Runtime
) -> None:
    # a start in the afternoon: the hour-before text never falls in the quiet hours
    starts = (datetime.now(UTC) + timedelta(days=10)).replace(
        hour=14, minute=0, second=0, microsecond=0
    )
    response = enroll(
        client,
        {
            "lead": ANA,
            "sequence": "webinar",
            "properties": {"starts_at": starts.isoformat().replace("+00:00", "Z"), "title": "X"},
        },
    )
    assert response.status_code == 201, response.text
    enrollment = response.json()["enrollment"]
    assert datetime.fromisoformat(enrollment["anchor_at"]) == starts
    found = steps(runtime, enrollment["id"])
    assert found["day-before"] == ("pending", starts - timedelta(hours=24))
    assert found["replay"] == ("pending", starts + timedelta(days=1))
    assert found["hour-before"][0] == "pending"


@pytest.mark.parametrize(
    "properties", [{}, {"starts_at": "next tuesday"}, {"starts_at": "2026-03-10T16:00:00"}]
)
def test_an_anchored_sequence_without_a_readable_start_is_a_422(
    client: TestClient, runtime: Runtime, properties: dict[str, Any]
) -> None:
    response = enroll(client, {"lead": ANA, "sequence": "webinar", "properties": properties})
    assert response.status_code == 422, response.text
    [field] = response.json()["error"]["fields"]
    assert field["field"] == "properties.starts_at"
    assert counts(runtime) == NOTHING


# -- the re-entry rule ----------------------------------------------------------------------------


def test_reenroll_never_is_a_409_naming_the_rule_even_after_the_lead_left(
    client: TestClient, runtime: Runtime
) -> None:
    body = {"lead": ANA, "sequence": "trial"}
    first = enroll(client, body)
    assert first.status_code == 201
    lead_id = first.json()["lead_id"]
    running = enroll(client, body)
    assert running.status_code == 409
    assert running.json()["error"]["message"] == (
        "ana@example.com is already enrolled in trial and trial says reenroll: never"
    )
    left = client.post(f"/v1/leads/{lead_id}/exit", json={"sequence": "trial"}, headers=AUTH)
    assert left.status_code == 200
    before = counts(runtime)
    after_exit = enroll(client, body)
    assert after_exit.status_code == 409
    assert after_exit.json()["error"]["message"] == (
        "ana@example.com was enrolled in trial before and trial says reenroll: never"
    )
    assert counts(runtime) == before
    assert rows(runtime, "SELECT status FROM enrollments") == [("exited",)]


def test_reenroll_after_exit_enrolls_again_once_the_cart_ended(
    client: TestClient, runtime: Runtime
) -> None:
    lead_id = enroll(client, cart("c1")).json()["lead_id"]
    exited = client.post(
        f"/v1/leads/{lead_id}/exit", json={"sequence": "cart-abandonment"}, headers=AUTH
    )
    assert exited.status_code == 200
    assert enroll(client, cart("c1")).status_code == 201
    found = rows(runtime, "SELECT key, status FROM enrollments ORDER BY status")
    assert found == [("c1", "active"), ("c1", "exited")]


# -- Idempotency-Key ------------------------------------------------------------------------------


def test_a_repeated_idempotency_key_answers_the_first_answer_and_writes_nothing(
    client: TestClient, runtime: Runtime
) -> None:
    first = enroll(client, cart("c1"), **{"Idempotency-Key": "req-1"})
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    written = counts(runtime)
    again = enroll(client, cart("c1"), **{"Idempotency-Key": "req-1"})
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert counts(runtime) == written
    assert written["enrollments"] == 1
    assert written["enrollment_requests"] == 1
    # the same key for another request is refused by name; a new key is a new request
    other = enroll(client, cart("c2"), **{"Idempotency-Key": "req-1"})
    assert other.status_code == 422
    assert other.json()["error"]["fields"][0]["field"] == "Idempotency-Key"
    assert counts(runtime) == written
    assert enroll(client, cart("c1"), **{"Idempotency-Key": "req-2"}).status_code == 409


def test_a_refused_request_keeps_no_answer_under_its_key(
    client: TestClient, runtime: Runtime
) -> None:
    refused = enroll(client, cart(None), **{"Idempotency-Key": "req-1"})
    assert refused.status_code == 422
    assert counts(runtime) == NOTHING
    assert enroll(client, cart("c1"), **{"Idempotency-Key": "req-1"}).status_code == 201


def test_two_requests_with_one_key_at_once_enroll_once(
    client: TestClient, runtime: Runtime
) -> None:
    # the lead exists, so both requests reach its lock: the key must decide, not the lock
    assert enroll(client, {"lead": ANA, "sequence": "trial"}).status_code == 201
    for attempt in range(4):
        request = ManualEnrollment(
            LeadIn.model_validate(ANA),
            "cart-abandonment",
            {"cart_token": f"c{attempt}"},
            idempotency_key=f"race-{attempt}",
        )
        answers = at_once(runtime, request, request)
        assert len(answers) == 2
        assert answers[0].body == answers[1].body
        assert sorted(a.replayed for a in answers) == [False, True]
    found = rows(runtime, "SELECT count(*) FROM enrollments WHERE sequence_id = 'cart-abandonment'")
    assert found == [(4,)]


def at_once(runtime: Runtime, *requests: ManualEnrollment) -> list[Answered]:
    """The requests from threads of their own, let go together."""
    start = threading.Barrier(len(requests))
    answers: list[Answered] = []

    def run(request: ManualEnrollment) -> None:
        start.wait()
        answers.append(enroll_by_hand(runtime, request))

    threads = [threading.Thread(target=run, args=(request,)) for request in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


# -- the batch ------------------------------------------------------------------------------------


def test_a_batch_enrolls_the_good_items_and_answers_each_in_order(
    client: TestClient, runtime: Runtime
) -> None:
    starts = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    bo = {"email": "bo@example.com"}
    items = [
        {**cart("c1"), "idempotency_key": "b-1"},
        {"lead": {"email": "not-an-email"}, "sequence": "trial"},
        cart(None, bo),
        {"lead": bo, "sequence": "no-such-sequence"},
        cart("c1"),
        {"lead": bo, "sequence": "webinar", "properties": {"starts_at": starts}},
        {"lead": bo, "sequence": "trial", "surprise": 1},
    ]
    response = client.post("/v1/enrollments/batch", json={"enrollments": items}, headers=AUTH)
    assert response.status_code == 207, response.text
    results = response.json()["results"]
    assert len(results) == len(items)
    assert results[0]["enrollment"]["key"] == "c1"
    assert results[1]["error"]["code"] == "invalid"
    assert results[1]["error"]["fields"][0]["field"] == "lead.email"
    assert results[2]["error"]["fields"] == [
        {"field": "properties.cart_token", "message": results[2]["error"]["fields"][0]["message"]}
    ]
    assert results[3]["error"] == {"code": "not_found", "message": "no sequence no-such-sequence"}
    assert results[4]["error"]["code"] == "conflict"
    assert "reenroll: after_exit" in results[4]["error"]["message"]
    assert results[5]["enrollment"]["sequence"] == "webinar"
    assert results[6]["error"]["fields"][0]["field"] == "surprise"
    found = rows(runtime, "SELECT sequence_id, key FROM enrollments ORDER BY sequence_id")
    assert found == [("cart-abandonment", "c1"), ("webinar", starts)]
    # the item's idempotency key replays like the header
    repeated = client.post(
        "/v1/enrollments/batch", json={"enrollments": [items[0]]}, headers=AUTH
    ).json()["results"]
    assert repeated == [results[0]]
    assert counts(runtime)["enrollments"] == 2


@pytest.mark.parametrize(
    "body", [{}, {"enrollments": []}, {"enrollments": {}}, [{"lead": ANA}], {"events": [{}]}]
)
def test_a_body_that_is_not_a_batch_is_a_422_that_writes_nothing(
    client: TestClient, runtime: Runtime, body: Any
) -> None:
    response = client.post("/v1/enrollments/batch", json=body, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid"
    assert counts(runtime) == NOTHING
