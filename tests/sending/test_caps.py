"""Frequency caps on the live worker, on SQLite and PostgreSQL: a send claimed or handed over and
not recorded yet counts, in the same batch and across workers; and the worker and `nurture
simulate` agree on which step goes and when the other may.

A 1-a-day email cap throughout; every message is counted at a real SMTP sink.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.helpers import make_runtime
from tests.library import unsubscribe_template
from tests.servers.processes import wait_for
from tests.servers.smtp import Sink
from worker.authoring.simulate import read_lead, simulate
from worker.engine.state import Event
from worker.ingest.schemas import EventIn
from worker.ingest.service import ingest
from worker.runtime.process import Runtime, build
from worker.sending.service import send_steps
from worker.store.db import transaction
from worker.store.steps import claim_due

pytestmark = pytest.mark.integration

START = datetime(2030, 1, 7, 10, 0, tzinfo=UTC)
"""A Monday ahead of the wall clock: the intake stamps decisions no earlier than now."""
DAY = timedelta(days=1)
POLICY = "kind: policy\ncaps: {email: {per: 1d, max: 1}}\n"
LEAD = {"email": "ana@example.com", "first_name": "Ana"}

CASES = {
    # one sequence whose second email comes an hour after the first
    "an hour apart": {
        "sequences/welcome.yaml": """
            name: Welcome
            enroll: {on: signed_up}
            steps:
              - {id: hello, day: 1, email: t/a}
              - {id: tips, at: 1h, email: t/b}
            """,
    },
    # two sequences enrolling on one event, each with an email due at once
    "two sequences on one event": {
        "sequences/alpha.yaml": """
            name: Alpha
            enroll: {on: signed_up}
            steps:
              - {id: hello, day: 1, email: t/a}
            """,
        "sequences/beta.yaml": """
            name: Beta
            enroll: {on: signed_up}
            steps:
              - {id: welcome, day: 1, email: t/b}
            """,
    },
    # two steps of one sequence due at the same instant
    "two steps at one instant": {
        "sequences/welcome.yaml": """
            name: Welcome
            enroll: {on: signed_up}
            steps:
              - {id: hello, day: 1, email: t/a}
              - {id: tour, day: 1, email: t/b}
            """,
    },
}


def project(case: str) -> dict[str, str]:
    return {
        **CASES[case],
        "sequences/policy.yaml": POLICY,
        "templates/t/a.html.j2": unsubscribe_template("A for {{ lead.first_name }}"),
        "templates/t/b.html.j2": unsubscribe_template("B for {{ lead.first_name }}"),
    }


def runtime_for(tmp_path: Path, database_url: str, sink: Sink, case: str) -> Runtime:
    return make_runtime(tmp_path, database_url, project(case), smtp_port=sink.port)


def post_signup(runtime: Runtime, at: datetime) -> None:
    payload = {"type": "signed_up", "occurred_at": at.isoformat(), "lead": LEAD}
    with transaction(runtime.database) as session:
        ingest(session, runtime.engine, EventIn.model_validate(payload), at)


def dispatch(runtime: Runtime, now: datetime) -> list[str]:
    with transaction(runtime.database) as session:
        return claim_due(session, now, 100)


def rows(runtime: Runtime) -> dict[tuple[str, str], tuple[str, datetime | None, str | None]]:
    """(sequence, step) → (status, due_at, reason)."""
    with runtime.database.connect() as connection:
        found = connection.execute(
            text("SELECT sequence_id, step_id, status, due_at, reason FROM step_runs")
        ).all()
    return {(seq, step): (status, _utc(due), reason) for seq, step, status, due, reason in found}


def sent_timeline(runtime: Runtime) -> list[tuple[datetime, str, str]]:
    with runtime.database.connect() as connection:
        found = connection.execute(
            text("SELECT at, sequence_id, step_id FROM timeline WHERE action = 'send'")
        ).all()
    return sorted((_utc(at) or START, seq, step) for at, seq, step in found)


def _utc(value: object) -> datetime | None:
    """SQLite gives raw SQL text back, PostgreSQL an aware datetime."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def simulated_sends(runtime: Runtime, until: datetime) -> list[tuple[datetime, str, str]]:
    entries = simulate(
        runtime.catalog,
        read_lead(LEAD, "lead"),
        events=[Event("signed_up", START)],
        start=START,
        until=until,
    )
    return sorted((e.at, e.sequence or "", e.step or "") for e in entries if e.action == "send")


def run_worker(runtime: Runtime, until: datetime) -> list[int]:
    """Drive the worker the way the simulator's clock moves: to each next due time, dispatch
    and send at that instant, until `until`. Returns the size of each batch."""
    batches: list[int] = []
    while True:
        with runtime.database.connect() as connection:
            found = connection.execute(
                text("SELECT min(due_at) FROM step_runs WHERE status = 'pending'")
            ).scalar()
        at = _utc(found)
        if at is None or at > until:
            return batches
        due = dispatch(runtime, at)
        batches.append(len(due))
        send_steps(runtime, due, lambda: at)  # noqa: B023 - called before `at` moves on


@pytest.mark.parametrize("case", list(CASES))
def test_the_worker_and_simulate_send_the_same_step_and_hold_the_other_as_long(
    tmp_path: Path, database_url: str, smtp_sink: Sink, case: str
) -> None:
    runtime = runtime_for(tmp_path, database_url, smtp_sink, case)
    expected = simulated_sends(runtime, START + 3 * DAY)
    assert len(expected) == 2
    assert expected[1][0] == expected[0][0] + DAY  # the simulator's answer to the cap
    post_signup(runtime, START)
    batches = run_worker(runtime, expected[1][0] - timedelta(seconds=1))
    if case != "an hour apart":
        assert batches[0] == 2  # both due at once, in one batch
    assert sent_timeline(runtime) == expected[:1]  # the same step goes first, at the same time
    assert len(smtp_sink.messages) == 1
    held = {key: row for key, row in rows(runtime).items() if row[0] == "pending"}
    # the other waits until the simulator sends it, and says why
    assert held == {expected[1][1:]: ("pending", expected[1][0], "cap")}
    run_worker(runtime, START + 3 * DAY)
    assert sent_timeline(runtime) == expected
    assert len(smtp_sink.messages) == 2


@pytest.mark.parametrize("case", ["two sequences on one event", "two steps at one instant"])
def test_two_workers_at_once_respect_the_cap_while_the_first_send_is_on_its_way(
    tmp_path: Path, database_url: str, smtp_sink: Sink, case: str
) -> None:
    runtime = runtime_for(tmp_path, database_url, smtp_sink, case)
    # worker A stops between its claim and the hand-over; worker B claims meanwhile
    stalled = build(
        runtime.config.model_copy(update={"fault_point": "after_claim", "fault_seconds": 3.0})
    )
    now = datetime.now(UTC)
    post_signup(runtime, now)
    first, second = dispatch(runtime, now)
    outcomes: dict[str, str] = {}
    worker_a = threading.Thread(target=lambda: outcomes.update(send_steps(stalled, [first])))
    worker_a.start()
    wait_for(lambda: "claimed" in {row[0] for row in rows(runtime).values()}, 10, "A's claim")
    outcomes.update(send_steps(runtime, [second]))  # worker B, while A's send is unrecorded
    worker_a.join(timeout=30)
    assert outcomes == {first: "sent", second: "waits (cap)"}
    assert len(smtp_sink.messages) == 1
    [(_, due_at, reason)] = [row for row in rows(runtime).values() if row[0] == "pending"]
    assert reason == "cap"
    assert due_at is not None
    assert now + DAY <= due_at <= now + DAY + timedelta(seconds=5)  # a day after A's claim
