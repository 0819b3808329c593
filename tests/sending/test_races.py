"""Concurrency: dispatchers and workers racing, exits racing sends — on SQLite and PostgreSQL.

Each message is counted at a real SMTP server by its step-run header.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.helpers import make_runtime
from tests.library import unsubscribe_template
from tests.servers.smtp import Sink
from worker.ingest.schemas import EventIn
from worker.ingest.service import ingest
from worker.runtime.process import Runtime
from worker.sending import claim as claiming
from worker.sending.service import send_step, send_steps
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
LEADS = 60


@pytest.fixture
def runtime(tmp_path: Path, smtp_sink: Sink, database_url: str) -> Runtime:
    return make_runtime(
        tmp_path,
        database_url,
        {
            "sequences/cart.yaml": SEQUENCE,
            "templates/c/reminder.html.j2": unsubscribe_template("Your cart"),
        },
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


def test_send_tasks_with_overlapping_batches_send_every_step_once(
    runtime: Runtime, smtp_sink: Sink
) -> None:
    enroll_many(runtime)
    steps = []
    while batch := claim(runtime):
        steps.extend(batch)
    # three rounds of batches of 9 over the same steps, shifted so every batch overlaps others
    batches = [steps[start : start + 9] for shift in (0, 3, 6) for start in
               range(-shift, len(steps), 9)]  # fmt: skip
    batches = [batch for batch in batches if batch]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda batch: send_steps(runtime, batch), batches))
    outcomes = Counter(result for found in results for result in found.values())
    assert outcomes["sent"] == LEADS
    assert sorted(smtp_sink.step_runs()) == sorted(steps)
    with runtime.database.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM messages")).scalar_one() == LEADS


def test_a_step_that_breaks_its_batch_is_tried_alone_and_holds_nobody_back(
    runtime: Runtime, smtp_sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    enroll_many(runtime)
    steps = []
    while batch := claim(runtime):
        steps.extend(batch)
    poison = steps[3]
    original = claiming._compose

    def broken(runtime: Runtime, loaded: Any, run: Any, go: Any, now: datetime) -> Any:
        if run.id == poison:
            raise RuntimeError("a bug in one step")
        return original(runtime, loaded, run, go, now)

    monkeypatch.setattr(claiming, "_compose", broken)
    results = send_steps(runtime, steps[:10])
    assert results[poison].startswith("error (a bug in one step")
    assert [results[step] for step in steps[:10] if step != poison] == ["sent"] * 9
    assert sorted(smtp_sink.step_runs()) == sorted(s for s in steps[:10] if s != poison)
    with runtime.database.connect() as connection:
        status = connection.execute(
            text("SELECT status FROM step_runs WHERE id = :id"), {"id": poison}
        ).scalar_one()
    assert status == "queued"  # untouched: the sweeper gives it back when its lease ends


def test_a_batch_with_a_repeated_an_exited_and_a_missing_step_settles_each(
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
    exited = steps[0]
    post(runtime, "order_placed", int(owner[exited].removeprefix("lead").split("@")[0]))
    results = send_steps(runtime, [exited, steps[1], steps[1], steps[2], "no-such-step"])
    assert results == {
        exited: "not claimable (skipped)",  # the exit finished it
        steps[1]: "sent",
        steps[2]: "sent",
        "no-such-step": "no such step",
    }
    assert sorted(smtp_sink.step_runs()) == sorted(steps[1:3])
