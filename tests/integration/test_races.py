"""Concurrency: dispatchers and workers racing, exits racing sends — on SQLite and PostgreSQL.

Each message is counted at a real SMTP server by its step-run header.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.integration.conftest import Sink, make_runtime
from worker.ingest import ingest
from worker.runtime import Runtime
from worker.schemas import EventIn
from worker.sending import send_step
from worker.store.db import transaction
from worker.store.steps import claim_due

pytestmark = pytest.mark.integration

SEQUENCE = """
name: Cart
enroll: {on: checkout_started}
exit_on: [order_placed]
steps:
  - {id: reminder, day: 1, email: c/reminder}
"""
TEMPLATE = (
    '---\nsubject: "Your cart"\n---\n<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>\n'
)
LEADS = 60


@pytest.fixture
def runtime(tmp_path: Path, smtp_sink: Sink, database_url: str) -> Runtime:
    return make_runtime(
        tmp_path,
        database_url,
        {"sequences/cart.yaml": SEQUENCE, "templates/c/reminder.html.j2": TEMPLATE},
        smtp_port=smtp_sink.port,
    )


def post(runtime: Runtime, kind: str, number: int) -> None:
    now = datetime.now(UTC)
    payload = {"type": kind, "lead": {"email": f"lead{number}@example.com"}}
    with transaction(runtime.database) as session:
        ingest(session, runtime.engine, EventIn.model_validate(payload), now)


def enroll_many(runtime: Runtime) -> None:
    for number in range(LEADS):
        post(runtime, "checkout_started", number)


def _utc(value: object) -> datetime:
    """SQLite returns text from raw SQL, PostgreSQL an aware datetime."""
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def claim(runtime: Runtime) -> list[str]:
    with transaction(runtime.database) as session:
        return claim_due(session, datetime.now(UTC), 7)


def test_dispatchers_at_once_enqueue_every_step_once(runtime: Runtime) -> None:
    enroll_many(runtime)

    def drain() -> list[str]:
        found: list[str] = []
        while batch := claim(runtime):
            found.extend(batch)
        return found

    with ThreadPoolExecutor(4) as pool:
        batches = list(pool.map(lambda _: drain(), range(4)))
    claimed = [step for batch in batches for step in batch]
    assert len(claimed) == LEADS
    assert len(set(claimed)) == LEADS


def test_workers_racing_on_each_step_send_it_once(runtime: Runtime, smtp_sink: Sink) -> None:
    enroll_many(runtime)
    steps = []
    while batch := claim(runtime):
        steps.extend(batch)
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda step: send_step(runtime, step), steps * 3))
    assert Counter(results)["sent"] == LEADS
    assert sorted(smtp_sink.step_runs()) == sorted(steps)


def test_an_order_racing_a_due_reminder_never_sends_after_the_exit(
    runtime: Runtime, smtp_sink: Sink
) -> None:
    enroll_many(runtime)
    steps = []
    while batch := claim(runtime):
        steps.extend(batch)
    with runtime.database.connect() as connection:
        owner: dict[str, str] = dict(
            connection.execute(
                text("SELECT s.id, l.email FROM step_runs s JOIN leads l ON l.id = s.lead_id")
            ).all()
        )

    def race(step: str) -> None:
        number = int(owner[step].removeprefix("lead").split("@")[0])
        with ThreadPoolExecutor(2) as pair:
            pair.submit(send_step, runtime, step)
            pair.submit(post, runtime, "order_placed", number)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(race, steps))
    sent = smtp_sink.step_runs()
    assert len(sent) == len(set(sent))
    with runtime.database.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT s.id, s.status, s.claimed_at, e.ended_at FROM step_runs s "
                "JOIN enrollments e ON e.id = s.enrollment_id"
            )
        ).all()
    for step, status, claimed_at, ended_at in rows:
        assert ended_at is not None  # every order ended its enrollment
        if step in sent:
            assert status == "sent"
            assert _utc(claimed_at) <= _utc(ended_at)  # the claim came first
        else:
            assert status == "skipped"
