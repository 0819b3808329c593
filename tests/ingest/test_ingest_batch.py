"""The set-based batch path (`ingest_batch`) against the one-event path on SQLite and PostgreSQL:
the same events through `/v1/events/batch` and one by one through `/v1/events` leave the same
leads, enrollments, step runs (due times included), events, timeline and CRM outbox; invalid
items, repeated ids, one lead several times and identities that merge answer item by item."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DataError, IntegrityError

from tests.helpers import fresh_database, make_runtime
from tests.library import TRIAL, unsubscribe_template
from worker.api.app import create_app
from worker.ingest import intake as events_api
from worker.runtime.process import Runtime

pytestmark = pytest.mark.integration

MORE = """\
  - {id: case-study, day: 5, email: t/welcome}
  - {id: offer, day: 7, email: t/welcome}
on:
  pricing_page_viewed:
    - send: {id: pricing, email: t/welcome, delay: 1h}
"""
SEQUENCE = TRIAL + MORE  # the trial, two more steps and a one-off on pricing_page_viewed
SCORING = """
kind: scoring
points: {pricing_page_viewed: 10, trial_started: 5}
segments: {cold: 0, warm: 20}
"""
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FILES = {
    "sequences/trial.yaml": SEQUENCE,
    "sequences/scoring.yaml": SCORING,
    "templates/t/welcome.html.j2": unsubscribe_template("Hi"),
}
# an hour ahead: every due time then follows from the events, not from the moment of the call
AT = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)


def event(
    type_: str, lead: dict[str, Any], *, id_: str | None = None, minutes: int = 0, **props: Any
) -> dict[str, Any]:
    found: dict[str, Any] = {
        "type": type_,
        "occurred_at": (AT + timedelta(minutes=minutes)).isoformat(),
        "lead": lead,
        "properties": props,
    }
    if id_ is not None:
        found["id"] = id_
    return found


@pytest.fixture(params=["sqlite", "postgres"])
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """Two empty databases on the same kind of server: one per path."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'batch.db'}", f"sqlite:///{tmp_path / 'single.db'}"
    server = request.getfixturevalue("postgres_url")
    return fresh_database(server), fresh_database(server)


def runtime_for(folder: Path, url: str) -> Runtime:
    found = make_runtime(folder, url, FILES)
    found.config = found.config.model_copy(update={"api_tokens": TOKEN})
    return found


@pytest.fixture
def batch_side(tmp_path: Path, urls: tuple[str, str]) -> Iterator[tuple[Runtime, TestClient]]:
    runtime = runtime_for(tmp_path / "batch", urls[0])
    with TestClient(create_app(lambda: runtime)) as client:
        yield runtime, client


@pytest.fixture
def single_side(tmp_path: Path, urls: tuple[str, str]) -> Iterator[tuple[Runtime, TestClient]]:
    runtime = runtime_for(tmp_path / "single", urls[1])
    with TestClient(create_app(lambda: runtime)) as client:
        yield runtime, client


def post_batch(client: TestClient, items: list[Any]) -> list[dict[str, Any]]:
    response = client.post("/v1/events/batch", json={"events": items}, headers=AUTH)
    assert response.status_code == 207, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def post_each(client: TestClient, items: list[Any]) -> list[dict[str, Any]]:
    results = []
    for item in items:
        response = client.post("/v1/events", json=item, headers=AUTH)
        assert response.status_code in (200, 202), response.text
        results.append(response.json())
    return results


def rows(runtime: Runtime, query: str) -> list[tuple[Any, ...]]:
    with runtime.database.connect() as connection:
        return [tuple(row) for row in connection.execute(text(query)).all()]


def snapshot(runtime: Runtime) -> dict[str, Any]:
    """Everything the two paths write, with ids replaced by who the lead is."""
    leads = rows(
        runtime,
        "SELECT id, email, phone, external_id, first_name, last_name, timezone, attributes,"
        " consent, suppressions, score, segment, history, last_activity_at, wake_at,"
        " crm_state FROM leads",
    )
    who = {row[0]: row[1] or row[2] or row[3] for row in leads}

    def consent(value: Any) -> Any:
        return {k: v["granted"] for k, v in (as_json(value) or {}).items()}

    def score(value: Any) -> Any:
        found = as_json(value) or {}
        entries = [(e["type"], e["points"], e["at"]) for e in found.get("entries", [])]
        return sorted(entries), found.get("fired")

    enrollment_of = {
        row[0]: (who[row[1]], row[2])
        for row in rows(runtime, "SELECT id, lead_id, sequence_id FROM enrollments")
    }
    return {
        "leads": sorted(
            (
                who[r[0]],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                str(as_json(r[7])),
                str(consent(r[8])),
                str(as_json(r[9])),
                str(score(r[10])),
                r[11],
                str(as_json(r[12])),
                r[13],
                r[14],
                str(as_json(r[15])),
            )
            for r in leads
        ),
        "enrollments": sorted(
            (who[r[0]], r[1], r[2], r[3], str(as_json(r[4])), r[5], r[6])
            for r in rows(
                runtime,
                "SELECT lead_id, sequence_id, key, status, events_seen, enrolled_at, anchor_at"
                " FROM enrollments",
            )
        ),
        "step_runs": sorted(
            (who[r[0]], enrollment_of.get(r[1]), *r[2:])
            for r in rows(
                runtime,
                "SELECT lead_id, enrollment_id, sequence_id, step_id, kind, position, status,"
                " due_at, nominal_at, channel, reason FROM step_runs",
            )
        ),
        # what the worker emits (segment_changed) is stamped with the time it was applied
        "events": sorted(
            (
                who[r[0]],
                r[1],
                "applied" if r[4] == "worker" else r[2],
                r[3] or "",
                r[4],
                str(as_json(r[5])),
            )
            for r in rows(
                runtime,
                "SELECT lead_id, type, occurred_at, idempotency_key, source, properties"
                " FROM events",
            )
        ),
        "timeline": sorted(
            (who[r[0]], r[1], r[2] or "", r[3] or "", r[4] or "")
            for r in rows(
                runtime, "SELECT lead_id, action, sequence_id, step_id, reason FROM timeline"
            )
        ),
        # order per contact is the outbox id: compare each lead's kinds in that order
        "crm_outbox": sorted(
            _per_lead(who, rows(runtime, "SELECT lead_id, kind FROM crm_outbox ORDER BY id"))
        ),
    }


def _per_lead(who: dict[str, str], found: list[tuple[Any, ...]]) -> list[tuple[str, str]]:
    kinds: dict[str, list[str]] = {}
    for lead_id, kind in found:
        kinds.setdefault(who[lead_id], []).append(kind)
    return [(lead, ",".join(each)) for lead, each in kinds.items()]


def as_json(value: Any) -> Any:
    import json

    return json.loads(value) if isinstance(value, str) else value


def without_ids(results: list[dict[str, Any]]) -> list[Any]:
    return [
        {k: v for k, v in r.items() if k not in ("event_id", "lead_id")} if "error" not in r else r
        for r in results
    ]


ANA = {"email": "Ana@Example.com", "first_name": "Ana", "timezone": "Europe/Berlin"}
STORY = [
    # a signup, then the same lead twice more in the batch, in order
    event("trial_started", ANA, id_="e1", plan="pro"),
    event("pricing_page_viewed", {"email": "ana@example.com"}, id_="e2", minutes=5),
    event("pricing_page_viewed", {"email": "ana@example.com"}, id_="e3", minutes=6),
    # identities that merge into one lead: email, then email + phone + external id, then each
    event("trial_started", {"email": "bo@example.com"}, id_="e4"),
    event(
        "page_viewed",
        {"email": "bo@example.com", "phone": "+4915112345678", "external_id": "crm-7"},
        id_="e5",
        minutes=1,
    ),
    event("pricing_page_viewed", {"phone": "+4915112345678", "first_name": "Bo"}, minutes=2),
    event(
        "pricing_page_viewed", {"external_id": "crm-7", "attributes": {"plan": "team"}}, minutes=3
    ),
    # a repeated id within the batch: the first wins
    event("trial_started", {"email": "cy@example.com"}, id_="e8"),
    event("trial_started", {"email": "someone-else@example.com"}, id_="e8"),
    # found by email before phone: Cy's lead, and the phone another lead holds stays Bo's
    event("page_viewed", {"email": "cy@example.com", "phone": "+4915112345678"}, id_="e10"),
    event("subscription_upgraded", {"email": "ana@example.com"}, id_="e11", minutes=10),
    event("trial_started", {"external_id": "crm-99", "consent": {"email": False}}),
]


def test_the_batch_leaves_what_one_by_one_leaves(
    batch_side: tuple[Runtime, TestClient], single_side: tuple[Runtime, TestClient]
) -> None:
    (batch_runtime, batch_client), (single_runtime, single_client) = batch_side, single_side
    earlier = [event("trial_started", {"email": "eve@example.com"}, id_="e0")]
    post_batch(batch_client, earlier)
    post_each(single_client, earlier)
    story = [*STORY, event("trial_started", {"email": "eve@example.com"}, id_="e0")]

    batched = post_batch(batch_client, story)
    one_by_one = post_each(single_client, story)

    assert without_ids(batched) == without_ids(one_by_one)
    assert [r["enrolled"] for r in batched[:4]] == [["trial"], [], [], ["trial"]]
    assert batched[10]["exited"] == ["trial"]
    assert snapshot(batch_runtime) == snapshot(single_runtime)
    # Bo's four events found one lead; Cy's kept its own, without Bo's phone
    assert len({batched[n]["lead_id"] for n in (3, 4, 5, 6)}) == 1
    assert batched[9]["lead_id"] == batched[7]["lead_id"] != batched[3]["lead_id"]
    assert rows(batch_runtime, "SELECT phone FROM leads WHERE email = 'cy@example.com'") == [
        (None,)
    ]
    pricing = rows(
        batch_runtime,
        "SELECT count(*) FROM step_runs WHERE step_id = 'pricing' AND lead_id = "
        f"'{batched[0]['lead_id']}'",
    )
    assert pricing == [(1,)]  # a one-off once per enrollment, though Ana looked twice


def test_invalid_items_and_repeated_ids_answer_item_by_item(
    batch_side: tuple[Runtime, TestClient],
) -> None:
    runtime, client = batch_side
    (first,) = post_batch(client, [event("trial_started", {"email": "ana@example.com"}, id_="a")])
    bad = event("trial_started", {"email": "not-an-email"}, id_="bad")
    results = post_batch(
        client,
        [
            event("trial_started", {"email": "ana@example.com"}, id_="a"),  # an earlier batch's
            bad,
            event("trial_started", {"email": "bo@example.com"}, id_="b"),
            event("pricing_page_viewed", {"email": "bo@example.com"}, id_="b"),  # this batch's
            event("trial_started", {"phone": "+4915112345678"}),
        ],
    )
    again, error, applied, repeated, last = results
    assert again == {**first, "duplicate": True, "enrolled": [], "exited": []}
    assert error["error"]["code"] == "invalid"
    assert error["error"]["fields"][0]["field"] == "lead.email"
    assert applied["enrolled"] == ["trial"]
    assert not applied["duplicate"]
    assert repeated == {**applied, "duplicate": True, "enrolled": [], "exited": []}
    assert last["enrolled"] == ["trial"]
    counts = rows(runtime, "SELECT count(*) FROM events WHERE source = 'api'")
    assert counts == [(3,)]
    assert rows(runtime, "SELECT count(*) FROM leads") == [(3,)]


def test_a_batch_the_database_refuses_is_applied_event_by_event(
    batch_side: tuple[Runtime, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, client = batch_side

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise IntegrityError("INSERT …", {}, Exception("duplicate key"))

    monkeypatch.setattr(events_api, "ingest_arrivals", refuse)
    apply = events_api.apply

    def refuse_one(runtime: Runtime, event: Any, *, source: str = "api") -> Any:
        if event.id == "refused":
            raise DataError("INSERT …", {}, Exception("value too long"))
        return apply(runtime, event, source=source)

    monkeypatch.setattr(events_api, "apply", refuse_one)
    results = post_batch(
        client,
        [
            event("trial_started", {"email": "ana@example.com"}, id_="a"),
            event("trial_started", {"email": "bo@example.com"}, id_="refused"),
            event("trial_started", {"email": "cy@example.com"}, id_="c"),
        ],
    )
    assert [r.get("enrolled") for r in results] == [["trial"], None, ["trial"]]
    assert results[1]["error"]["code"] == "not_stored"
    assert rows(runtime, "SELECT count(*) FROM leads") == [(2,)]


def test_a_batch_applies_each_lead_s_events_in_order(
    batch_side: tuple[Runtime, TestClient],
) -> None:
    runtime, client = batch_side
    lead = {"email": "ana@example.com"}
    results = post_batch(
        client,
        [
            event("pricing_page_viewed", lead),  # not enrolled yet: nothing to react to
            event("trial_started", lead, minutes=1),
            event("pricing_page_viewed", lead, minutes=2),  # now the one-off
            event("subscription_upgraded", lead, minutes=3),
        ],
    )
    assert [r["enrolled"] for r in results] == [[], ["trial"], [], []]
    assert results[3]["exited"] == ["trial"]
    assert len({r["lead_id"] for r in results}) == 1
    assert rows(runtime, "SELECT status FROM enrollments") == [("exited",)]
    steps = rows(runtime, "SELECT step_id FROM step_runs ORDER BY step_id")
    assert ("pricing",) in steps
    history = rows(runtime, "SELECT history FROM leads")[0][0]
    seen = as_json(history)
    assert seen[0] == "pricing_page_viewed"
    assert seen.index("trial_started") < seen.index("subscription_upgraded")
