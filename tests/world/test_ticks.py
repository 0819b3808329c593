"""Lead ticks on the live worker path (`wake_due_leads`, what the `leads.tick` task runs) against
SQLite and PostgreSQL: a quiet spell emits `lead_inactive` once and enrolls the win-back
sequence, a decaying score crosses a segment line, the batch adapts to the leads due and to
the time left, and the wake query reads an index."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlmodel import col

from tests.helpers import make_runtime
from tests.library import unsubscribe_template
from worker.config import settings
from worker.ingest.schemas import EventIn
from worker.ingest.service import ingest
from worker.runtime.process import Runtime, current
from worker.store.db import transaction
from worker.store.leads import wake_query
from worker.store.tables import LeadRow
from worker.world.ticks import wake_due_leads

pytestmark = pytest.mark.integration

T0 = datetime.now(UTC).replace(microsecond=0)
"""Events are decided at the real time at the earliest (ingest), so the story starts now."""
FILES = {
    "sequences/scoring.yaml": """
        kind: scoring
        points: {pricing_page_viewed: 30}
        decay: {half_life: 1d}
        segments: {hot: 50, warm: 20, cold: 0}
    """,
    "sequences/policy.yaml": """
        kind: policy
        inactive_after: 30d
    """,
    "sequences/winback.yaml": """
        name: Win back
        enroll: {on: lead_inactive}
        steps:
          - {id: miss-you, day: 1, email: w/hello}
    """,
    "sequences/cooling.yaml": """
        name: Cooling down
        enroll: {on: segment_changed, if: "event.properties.from == 'hot'"}
        steps:
          - {id: still-there, day: 1, email: w/hello}
    """,
    "templates/w/hello.html.j2": unsubscribe_template("Hello"),
}


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Runtime:
    return make_runtime(tmp_path, database_url, FILES)


def post(runtime: Runtime, kind: str, email: str, at: datetime) -> None:
    event = EventIn.model_validate(
        {"type": kind, "occurred_at": at.isoformat(), "lead": {"email": email}}
    )
    with transaction(runtime.database) as session:
        ingest(session, runtime.engine, event, at)


def query(runtime: Runtime, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with runtime.database.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql), params)]


def events(runtime: Runtime, kind: str) -> list[tuple[datetime, dict[str, Any]]]:
    """(occurred_at, properties) of every stored event of a type, in time order."""
    found = query(
        runtime,
        "SELECT occurred_at, properties FROM events WHERE type = :t ORDER BY occurred_at",
        t=kind,
    )
    return [(_aware(at), json.loads(p) if isinstance(p, str) else p) for at, p in found]


def wake_at(runtime: Runtime, email: str) -> datetime | None:
    with transaction(runtime.database) as session:
        found: datetime | None = session.execute(
            select(col(LeadRow.wake_at)).where(col(LeadRow.email) == email)
        ).scalar_one()
    return found


def enrollments(runtime: Runtime) -> list[tuple[str, str]]:
    return query(runtime, "SELECT sequence_id, status FROM enrollments ORDER BY sequence_id")


def _aware(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def test_a_quiet_spell_emits_lead_inactive_once_and_enrolls_the_win_back(
    runtime: Runtime,
) -> None:
    post(runtime, "signed_up", "ana@example.com", T0)
    assert wake_at(runtime, "ana@example.com") == T0 + timedelta(days=30)

    assert wake_due_leads(runtime, T0 + timedelta(days=29, hours=23)).leads == 0
    assert events(runtime, "lead_inactive") == []

    woken = wake_due_leads(runtime, T0 + timedelta(days=30, minutes=1))
    assert (woken.leads, woken.more_due) == (1, False)
    assert events(runtime, "lead_inactive") == [(T0 + timedelta(days=30), {})]
    assert enrollments(runtime) == [("winback", "active")]
    assert query(runtime, "SELECT step_id, status FROM step_runs") == [("miss-you", "pending")]
    assert wake_at(runtime, "ana@example.com") is None  # once per quiet spell

    assert wake_due_leads(runtime, T0 + timedelta(days=90)).leads == 0
    assert len(events(runtime, "lead_inactive")) == 1

    # activity starts a new spell: 30 days from the new event
    back = T0 + timedelta(days=91)
    post(runtime, "signed_up", "ana@example.com", back)
    assert wake_at(runtime, "ana@example.com") == back + timedelta(days=30)


def test_a_decaying_score_crosses_the_segment_line_on_time(runtime: Runtime) -> None:
    post(runtime, "pricing_page_viewed", "ana@example.com", T0)
    post(runtime, "pricing_page_viewed", "ana@example.com", T0)
    assert query(runtime, "SELECT segment FROM leads") == [("hot",)]
    # hot holds until the score is under warm's 20 (docs/sequences.md); 60 points halving
    # every day get there after log2(60/20) days: 1 d 14 h 2 min 20 s (+ rounding to 0.01)
    drop = wake_at(runtime, "ana@example.com")
    assert drop is not None
    assert T0 + timedelta(days=1, hours=14, minutes=2) < drop
    assert drop < T0 + timedelta(days=1, hours=14, minutes=4)

    assert wake_due_leads(runtime, drop - timedelta(seconds=1)).leads == 0
    assert query(runtime, "SELECT segment FROM leads") == [("hot",)]
    moves = [(c["from"], c["to"]) for _, c in events(runtime, "segment_changed")]
    assert moves == [(None, "warm"), ("warm", "hot")]

    assert wake_due_leads(runtime, drop).leads == 1
    assert query(runtime, "SELECT segment FROM leads") == [("cold",)]
    [*_, (at, changed)] = events(runtime, "segment_changed")
    assert changed == {"from": "hot", "to": "cold"}
    assert at == drop
    assert enrollments(runtime) == [("cooling", "active")]
    assert query(runtime, "SELECT step_id, status FROM step_runs") == [("still-there", "pending")]
    # decay never takes a score below 0: next is the quiet spell, 30 days after the views
    assert wake_at(runtime, "ana@example.com") == T0 + timedelta(days=30)
    assert wake_due_leads(runtime, drop + timedelta(days=3)).leads == 0


def test_the_batch_goes_on_while_leads_are_due_and_stops_when_time_is_up(
    runtime: Runtime,
) -> None:
    for n in range(25):
        post(runtime, "signed_up", f"lead{n}@example.com", T0 + timedelta(seconds=n))
    post(runtime, "signed_up", "later@example.com", T0 + timedelta(days=5))
    due = T0 + timedelta(days=31)

    clock = count()  # every look at the clock is one second later
    first = wake_due_leads(runtime, due, chunk=10, seconds=1.5, timer=lambda: float(next(clock)))
    assert (first.leads, first.chunks, first.more_due) == (20, 2, True)
    # the most overdue first
    inactive = query(runtime, "SELECT lead_id FROM events WHERE type = 'lead_inactive'")
    emails = {e for (e,) in query(runtime, "SELECT email FROM leads WHERE wake_at IS NULL")}
    assert len(inactive) == 20
    assert emails == {f"lead{n}@example.com" for n in range(20)}

    rest = wake_due_leads(runtime, due, chunk=10)
    assert (rest.leads, rest.chunks, rest.more_due) == (5, 1, False)
    assert len(query(runtime, "SELECT 1 FROM events WHERE type = 'lead_inactive'")) == 25
    assert wake_at(runtime, "later@example.com") == T0 + timedelta(days=35)


def test_a_lead_that_cannot_be_ticked_does_not_hold_the_others_back(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for n in range(3):
        post(runtime, "signed_up", f"lead{n}@example.com", T0 + timedelta(seconds=n))
    [(broken,)] = query(runtime, "SELECT id FROM leads WHERE email = 'lead1@example.com'")
    engine = runtime.engine
    tick = engine.tick

    def failing(world: Any, now: datetime) -> Any:
        if world.lead.id == broken:
            raise RuntimeError("a bug in the engine")
        return tick(world, now)

    monkeypatch.setattr(engine, "tick", failing)
    woken = wake_due_leads(runtime, T0 + timedelta(days=31), chunk=10)
    assert (woken.leads, woken.failed) == (2, {broken})
    assert "lead " + broken + " could not be ticked" in caplog.text
    stuck = {e for (e,) in query(runtime, "SELECT email FROM leads WHERE wake_at IS NOT NULL")}
    assert stuck == {"lead1@example.com"}  # tried again by the next tick


def test_the_wake_query_reads_the_wake_at_index(runtime: Runtime) -> None:
    statement = wake_query(T0, 100)
    with runtime.database.connect() as connection:
        dialect = connection.dialect
        if dialect.name == "postgresql":
            connection.execute(text("SET enable_seqscan = off"))  # the index must be usable
            explain = "EXPLAIN "
        else:
            explain = "EXPLAIN QUERY PLAN "
        sql = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        plan = " ".join(str(row) for row in connection.execute(text(explain + sql)))
    assert "ix_leads_wake_at" in plan, plan


@pytest.fixture
def worker_settings(
    tmp_path: Path, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The environment a `nurture worker` reads, pointing at the test's project."""
    config = runtime.config
    for name in ("home", "database_url", "sequences_dir", "templates_dir", "outbox_dir"):
        monkeypatch.setenv(f"NURTURE_{name.upper()}", str(getattr(config, name)))
    settings.cache_clear()
    current.cache_clear()
    try:
        yield
    finally:
        settings.cache_clear()
        current.cache_clear()


@pytest.mark.usefixtures("worker_settings")
def test_the_leads_tick_task_wakes_leads_due_now(runtime: Runtime) -> None:
    from worker.tasks import leads_tick

    quiet = datetime.now(UTC) - timedelta(days=31)
    post(runtime, "signed_up", "ana@example.com", quiet)
    post(runtime, "signed_up", "bo@example.com", datetime.now(UTC))
    assert leads_tick() == "woke 1 lead(s) in 1 chunk(s)"
    assert events(runtime, "lead_inactive") == [(quiet + timedelta(days=30), {})]
    assert leads_tick() == "woke 0 lead(s) in 1 chunk(s)"


def test_a_pause_with_an_end_is_lifted_by_the_tick(runtime: Runtime) -> None:
    from worker.support.service import pause_lead

    post(runtime, "signed_up", "ana@example.com", datetime.now(UTC))
    [(lead_id,)] = query(runtime, "SELECT id FROM leads")
    until = datetime.now(UTC) + timedelta(hours=1)
    pause_lead(runtime, lead_id, until=until, reason="holiday")
    assert wake_at(runtime, "ana@example.com") == until
    assert wake_due_leads(runtime, until - timedelta(seconds=1)).leads == 0
    assert wake_due_leads(runtime, until).leads == 1
    [(pause,)] = query(runtime, "SELECT pause FROM leads")
    assert pause is None or json.loads(pause) is None
    assert query(runtime, "SELECT action FROM timeline ORDER BY id")[-1] == ("resume",)
