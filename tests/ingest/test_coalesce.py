"""Single events coalesced: concurrent requests to `/v1/events` (and the form and Shopify
webhooks) are applied together through the set-based batch path, and each caller gets exactly
the answer it would have had alone — mixed leads, repeated ids inside one group, an invalid or
refused event among good ones, and one lead's events in the order they arrived."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import DataError, IntegrityError

from tests.helpers import run_async
from tests.ingest.test_ingest_batch import (
    AUTH,
    STORY,
    event,
    rows,
    runtime_for,
    snapshot,
    urls,
    without_ids,
)
from worker.api.app import create_app
from worker.ingest import intake, service
from worker.ingest.intake import apply
from worker.ingest.pipes import pipes_for
from worker.ingest.schemas import EventIn
from worker.ingest.service import Arrival, Ingested
from worker.runtime.process import Runtime

pytestmark = pytest.mark.integration
__all__ = ["urls"]  # the fixture: two empty databases, SQLite or PostgreSQL


@pytest.fixture
def sides(tmp_path: Path, urls: tuple[str, str]) -> Iterator[tuple[Runtime, Runtime]]:
    coalesced, alone = runtime_for(tmp_path / "a", urls[0]), runtime_for(tmp_path / "b", urls[1])
    yield coalesced, alone
    coalesced.database.dispose()
    alone.database.dispose()


async def post_together(runtime: Runtime, path: str, bodies: list[Any]) -> list[httpx.Response]:
    """Every body at once from one event loop, as concurrent clients would; app errors come
    back as the 500 a client sees."""
    transport = httpx.ASGITransport(app=create_app(lambda: runtime), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://nurture") as client:
        return list(
            await asyncio.gather(*(client.post(path, json=b, headers=AUTH) for b in bodies))
        )


def answers(responses: list[httpx.Response]) -> list[tuple[int, Any]]:
    return [(r.status_code, r.json() if r.status_code < 500 else None) for r in responses]


def as_answer(found: Ingested) -> dict[str, Any]:
    return {
        "event_id": found.event_id,
        "lead_id": found.lead_id,
        "duplicate": found.duplicate,
        "enrolled": found.enrolled,
        "exited": found.exited,
    }


def test_coalesced_requests_leave_what_one_at_a_time_leaves(
    sides: tuple[Runtime, Runtime],
) -> None:
    coalesced, alone = sides
    story = [*STORY, event("trial_started", {"email": "eve@example.com"}, id_="e1")]

    async def run() -> tuple[list[httpx.Response], int]:
        responses = await post_together(coalesced, "/v1/events", story)
        return responses, pipes_for(coalesced).apply.groups

    responses, groups = run_async(run())
    one_by_one = [as_answer(apply(alone, EventIn.model_validate(item))) for item in story]

    assert groups < len(story)  # gathered, not one group per request
    got = answers(responses)
    assert without_ids([body for _, body in got]) == without_ids(one_by_one)
    statuses = [status for status, _ in got]
    assert statuses == [200 if a["duplicate"] else 202 for a in one_by_one]
    assert snapshot(coalesced) == snapshot(alone)
    # e8 twice in one group: the second answers with the first's event and lead
    first, second = got[7][1], got[8][1]
    assert second == {**first, "duplicate": True, "enrolled": [], "exited": []}
    # e1 again at the end: Ana's signup, her lead
    assert got[-1][1]["lead_id"] == got[0][1]["lead_id"]
    assert got[-1][1]["duplicate"] is True


def test_one_lead_s_events_are_applied_in_arrival_order(sides: tuple[Runtime, Runtime]) -> None:
    coalesced, _ = sides
    lead = {"email": "ana@example.com"}
    story = [
        event("pricing_page_viewed", lead),  # not enrolled yet: nothing to react to
        event("trial_started", lead, minutes=1),
        event("pricing_page_viewed", lead, minutes=2),  # now the one-off
        event("subscription_upgraded", lead, minutes=3),
    ]

    async def run() -> list[Ingested]:
        pipes = pipes_for(coalesced)
        items = [Arrival(EventIn.model_validate(item)) for item in story]
        found = await asyncio.gather(*(pipes.apply.submit(item) for item in items))
        return [f for f in found if isinstance(f, Ingested)]

    found = run_async(run())
    assert len(found) == len(story)
    assert [f.enrolled for f in found] == [[], ["trial"], [], []]
    assert found[3].exited == ["trial"]
    assert rows(coalesced, "SELECT status FROM enrollments") == [("exited",)]
    assert ("pricing",) in rows(coalesced, "SELECT step_id FROM step_runs")


def test_an_invalid_or_refused_event_fails_alone(
    sides: tuple[Runtime, Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    coalesced, _ = sides

    def refuse_batch(*args: Any, **kwargs: Any) -> Any:
        raise IntegrityError("INSERT …", {}, Exception("duplicate key"))

    one = service.ingest_one

    def refuse_one(session: Any, engine: Any, arrival: Arrival, now: Any) -> Any:
        if arrival.event.id == "refused":
            raise DataError("INSERT …", {}, Exception("value too long"))
        return one(session, engine, arrival, now)

    monkeypatch.setattr(intake, "ingest_arrivals", refuse_batch)
    monkeypatch.setattr(intake, "ingest_one", refuse_one)
    bodies = [
        event("trial_started", {"email": "ana@example.com"}, id_="a"),
        event("trial_started", {"email": "not-an-email"}, id_="bad"),
        event("trial_started", {"email": "bo@example.com"}, id_="refused"),
        event("trial_started", {"email": "cy@example.com"}, id_="c"),
        event("trial_started", {"email": "dee@example.com"}, id_="a"),  # a's repeat
    ]
    got = answers(run_async(post_together(coalesced, "/v1/events", bodies)))

    assert [status for status, _ in got] == [202, 422, 500, 202, 200]
    assert got[1][1]["error"]["fields"][0]["field"] == "lead.email"
    assert got[0][1]["enrolled"] == got[3][1]["enrolled"] == ["trial"]
    assert got[4][1] == {**got[0][1], "duplicate": True, "enrolled": []}
    assert rows(coalesced, "SELECT email FROM leads ORDER BY email") == [
        ("ana@example.com",),
        ("cy@example.com",),
    ]


def test_webhooks_ride_the_same_path(sides: tuple[Runtime, Runtime]) -> None:
    coalesced, _ = sides
    forms = [{"email": f"lead{n}@example.com", "id": f"f{n}"} for n in range(6)]
    forms.append({"email": "lead0@example.com", "id": "f0"})  # a repeated delivery

    async def run() -> tuple[list[httpx.Response], int]:
        found = await post_together(coalesced, "/v1/webhooks/forms/signup", forms)
        return found, pipes_for(coalesced).apply.groups

    responses, groups = run_async(run())
    got = answers(responses)
    assert groups < len(forms)
    assert [status for status, _ in got] == [202] * 6 + [200]
    assert got[6][1]["lead_id"] == got[0][1]["lead_id"]
    assert rows(coalesced, "SELECT count(*) FROM events WHERE source = 'form'") == [(6,)]
