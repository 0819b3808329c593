"""Events in, steps out, on SQLite and PostgreSQL, with a real SMTP sink."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.helpers import make_runtime
from tests.library import WELCOME, exiting_on, greeting_template, welcome_project
from tests.servers.smtp import Sink
from worker.ingest.schemas import EventIn
from worker.ingest.service import ingest
from worker.runtime.process import Runtime, build
from worker.sending.service import send_step
from worker.store.db import transaction
from worker.store.steps import claim_due, sweep

pytestmark = pytest.mark.integration

FILES = welcome_project(exiting_on(WELCOME, "purchased"), greeting_template("Hello"))


@pytest.fixture
def runtime(tmp_path: Path, smtp_sink: Sink, database_url: str) -> Runtime:
    return make_runtime(
        tmp_path,
        database_url,
        FILES,
        smtp_port=smtp_sink.port,
    )


def post(runtime: Runtime, kind: str, at: datetime, event_id: str | None = None) -> None:
    payload = {"type": kind, "id": event_id, "occurred_at": at.isoformat(),
               "lead": {"email": "ana@example.com", "first_name": "Ana"}}  # fmt: skip
    with transaction(runtime.database) as session:
        ingest(session, runtime.engine, EventIn.model_validate(payload), at)


def dispatch(runtime: Runtime, now: datetime) -> list[str]:
    with transaction(runtime.database) as session:
        return claim_due(session, now, 100)


def test_an_event_sends_day_one_once_even_when_the_task_runs_twice(
    runtime: Runtime, smtp_sink: Sink
) -> None:
    now = datetime.now(UTC)
    post(runtime, "signed_up", now, "evt-1")
    post(runtime, "signed_up", now, "evt-1")  # a repeated webhook
    [step] = dispatch(runtime, now)
    assert send_step(runtime, step) == "sent"
    assert send_step(runtime, step).startswith("not claimable")  # redelivered message
    assert dispatch(runtime, now) == []
    assert smtp_sink.step_runs() == [step]
    [message] = smtp_sink.messages
    assert message["Subject"] == "Hello Ana"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Unsubscribe"].startswith("<http://127.0.0.1:8000/u/")  # not encoded
    assert message["Message-ID"] == f"<{step}@nurture>"
    with runtime.database.connect() as connection:
        statuses = connection.execute(
            text("SELECT step_id, status FROM step_runs ORDER BY position")
        ).all()
    assert [tuple(s) for s in statuses] == [("hello", "sent"), ("later", "pending")]


def test_an_exit_before_the_claim_stops_the_step(runtime: Runtime, smtp_sink: Sink) -> None:
    now = datetime.now(UTC)
    post(runtime, "signed_up", now)
    [step] = dispatch(runtime, now)
    post(runtime, "purchased", now)
    assert send_step(runtime, step).startswith("not claimable (skipped)")
    assert smtp_sink.messages == []


def test_smtp_4xx_retries_later_and_5xx_fails_and_suppresses(
    runtime: Runtime, smtp_sink: Sink
) -> None:
    now = datetime.now(UTC)
    post(runtime, "signed_up", now)
    smtp_sink.replies = ["451 4.3.0 try again later"]
    [step] = dispatch(runtime, now)
    assert send_step(runtime, step).startswith("retry at")
    assert dispatch(runtime, now) == []  # not due yet
    later = now + timedelta(minutes=2)
    assert dispatch(runtime, later) == [step]
    assert send_step(runtime, step, clock=lambda: later) == "sent"
    assert smtp_sink.step_runs() == [step]

    post(runtime, "signed_up", now)  # ignored: already enrolled
    with runtime.database.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM enrollments")).scalar_one()
    assert count == 1


def test_a_permanent_refusal_fails_the_step_and_suppresses_the_address(
    runtime: Runtime, smtp_sink: Sink
) -> None:
    now = datetime.now(UTC)
    post(runtime, "signed_up", now)
    smtp_sink.replies = ["550 5.1.1 no such user"]
    [step] = dispatch(runtime, now)
    assert send_step(runtime, step) == "failed (550)"
    with runtime.database.connect() as connection:
        suppressions = connection.execute(text("SELECT suppressions FROM leads")).scalar_one()
        reason = connection.execute(
            text("SELECT reason FROM step_runs WHERE id = :id"), {"id": step}
        ).scalar_one()
    if isinstance(suppressions, str):  # SQLite gives JSON back as text
        suppressions = json.loads(suppressions)
    assert suppressions == {"email": "bounced"}
    assert reason == "550"


def test_a_lease_whose_task_vanished_is_sent_after_the_sweeper(
    runtime: Runtime, smtp_sink: Sink
) -> None:
    now = datetime.now(UTC)
    post(runtime, "signed_up", now)
    [step] = dispatch(runtime, now)  # the message is lost: no task ever runs
    with transaction(runtime.database) as session:
        swept = sweep(session, now + timedelta(minutes=5))
    assert swept.requeued == 1
    [again] = dispatch(runtime, now + timedelta(minutes=5))
    assert again == step
    assert send_step(runtime, step, clock=lambda: now + timedelta(minutes=5)) == "sent"
    assert smtp_sink.step_runs() == [step]


def test_two_processes_enrolling_leads_never_reuse_an_enrollment_id(
    runtime: Runtime, tmp_path: Path
) -> None:
    other = make_runtime(tmp_path, runtime.config.database_url or "", {})
    now = datetime.now(UTC)
    for number, found in enumerate((runtime, other, build(runtime.config))):
        payload = {"type": "signed_up", "lead": {"email": f"lead{number}@example.com"}}
        with transaction(found.database) as session:
            assert ingest(session, found.engine, EventIn.model_validate(payload), now).enrolled
    with runtime.database.connect() as connection:
        count = connection.execute(text("SELECT count(DISTINCT id) FROM enrollments")).scalar_one()
    assert count == 3
