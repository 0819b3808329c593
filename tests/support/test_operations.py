"""Support and operators against a real database: pause and resume, the incident switch,
deploying a sequence edit to enrollments in flight, a broken edit, retiring a sequence."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlmodel import col

from tests.helpers import make_runtime
from tests.library import unsubscribe_template, welcome_project
from tests.servers.smtp import Sink
from worker.authoring.diff import diff
from worker.ingest.schemas import EventIn
from worker.ingest.service import ingest
from worker.runtime.process import CatalogError, Runtime
from worker.sending.service import send_step
from worker.store.db import transaction
from worker.store.steps import claim_due
from worker.store.tables import StepRunRow, TimelineRow
from worker.support.deploy import deploy, retire
from worker.support.service import pause_lead, resume_lead, set_switch

pytestmark = pytest.mark.integration

V1 = """
name: Welcome
enroll: {on: signed_up}
steps:
  - {id: hello, day: 1, email: w/hello}
  - {id: tips, day: 3, email: w/hello}
  - {id: later, day: 5, email: w/hello}
"""
V2 = """
name: Welcome
enroll: {on: signed_up}
steps:
  - {id: hello, day: 1, email: w/hello}
  - {id: tips, day: 4, email: w/hello}
  - {id: extra, day: 6, email: w/hello}
"""


@pytest.fixture
def runtime(tmp_path: Path, smtp_sink: Sink, database_url: str) -> Runtime:
    found = make_runtime(
        tmp_path,
        database_url,
        welcome_project(V1, unsubscribe_template("Hello")),
        smtp_port=smtp_sink.port,
    )
    deploy(found)  # record the first version, as `nurture run` does at start
    return found


def signed_up(runtime: Runtime, email: str = "ana@example.com") -> str:
    payload = {"type": "signed_up", "lead": {"email": email}}
    with transaction(runtime.database) as session:
        result = ingest(session, runtime.engine, EventIn.model_validate(payload), now())
    return result.lead_id


def now() -> datetime:
    return datetime.now(UTC)


def send_due(runtime: Runtime, at: datetime | None = None) -> list[str]:
    moment = at or now()
    with transaction(runtime.database) as session:
        leased = claim_due(session, moment, 100)
    return [send_step(runtime, step, clock=lambda: moment) for step in leased]


def rows(runtime: Runtime, sql: str) -> list[tuple[Any, ...]]:
    with runtime.database.connect() as connection:
        return [tuple(r) for r in connection.execute(text(sql)).all()]


def as_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def remaining_due(runtime: Runtime) -> dict[str, datetime]:
    """Due times of the steps after Day 1, as aware datetimes on either database."""
    with transaction(runtime.database) as session:
        found = session.execute(
            select(col(StepRunRow.step_id), col(StepRunRow.due_at)).where(
                col(StepRunRow.step_id) != "hello"
            )
        ).all()
    return {step: due for step, due in found if due is not None}


def timeline_times(runtime: Runtime, action: str) -> list[datetime]:
    with transaction(runtime.database) as session:
        found = session.execute(
            select(col(TimelineRow.at)).where(col(TimelineRow.action) == action)
        ).scalars()
        return list(found)


def test_a_paused_lead_is_held_and_resume_shifts_the_remaining_steps(
    runtime: Runtime, smtp_sink: Sink
) -> None:
    lead_id = signed_up(runtime)
    pause_lead(runtime, lead_id, reason="asked for a break", by="support:maria")
    assert send_due(runtime) == ["waits (paused)"]
    assert smtp_sink.messages == []
    [(pause,)] = rows(runtime, "SELECT pause FROM leads")
    assert as_json(pause)["reason"] == "asked for a break"
    assert as_json(pause)["by"] == "support:maria"
    paused_at = datetime.fromisoformat(as_json(pause)["at"])
    before = remaining_due(runtime)
    resume_lead(runtime, lead_id)
    assert send_due(runtime) == ["sent"]
    after = remaining_due(runtime)
    [resumed_at] = set(timeline_times(runtime, "resume"))  # the lead's and its enrollment's
    assert resumed_at > paused_at
    # SPEC §2: the remaining steps move by exactly the time spent paused
    assert {step: after[step] - before[step] for step in before} == {
        "tips": resumed_at - paused_at,
        "later": resumed_at - paused_at,
    }
    actions = [a for (a,) in rows(runtime, "SELECT action FROM timeline ORDER BY id")]
    assert actions[:3] == ["enroll", "pause", "resume"]


def test_a_pause_with_an_end_moves_the_steps_and_resumes_by_itself(runtime: Runtime) -> None:
    lead_id = signed_up(runtime)
    until = now() + timedelta(days=2)
    pause_lead(runtime, lead_id, reason="travelling", until=until, by="support")
    [(tips,)] = rows(runtime, "SELECT due_at FROM step_runs WHERE step_id = 'tips'")
    assert str(tips) >= str((now() + timedelta(days=4)).replace(tzinfo=None))[:10]
    assert send_due(runtime) == []  # hello moved two days too
    assert send_due(runtime, until + timedelta(seconds=1)) == ["sent"]


def test_the_incident_switch_holds_every_send_and_loses_nothing(
    runtime: Runtime, smtp_sink: Sink
) -> None:
    signed_up(runtime, "a@example.com")
    signed_up(runtime, "b@example.com")
    set_switch(runtime, "sends", "paused", by="ops")
    assert send_due(runtime) == ["waits (sends_paused)"] * 2
    assert send_due(runtime) == []  # held rows are not due
    set_switch(runtime, "sends", "running", by="ops")
    assert send_due(runtime) == ["sent", "sent"]
    assert len(smtp_sink.messages) == 2


def test_a_paused_sequence_holds_only_its_steps(runtime: Runtime) -> None:
    signed_up(runtime)
    set_switch(runtime, "sequence:welcome", "paused")
    assert send_due(runtime) == ["waits (sequence_paused)"]
    set_switch(runtime, "sequence:welcome", "running")
    assert send_due(runtime) == ["sent"]


def test_a_sequence_edit_moves_enrollments_in_flight_by_step_id(
    runtime: Runtime, smtp_sink: Sink, tmp_path: Path
) -> None:
    signed_up(runtime)
    assert send_due(runtime) == ["sent"]
    (tmp_path / "sequences" / "welcome.yaml").write_text(textwrap.dedent(V2))
    deployed = deploy(runtime)
    migration = deployed.changed["welcome"]
    assert (migration.retimed, migration.removed, migration.added) == (1, 1, 1)
    steps = dict(rows(runtime, "SELECT step_id, status FROM step_runs"))
    assert steps == {"hello": "sent", "tips": "pending", "later": "skipped", "extra": "pending"}
    [(reason,)] = rows(runtime, "SELECT reason FROM step_runs WHERE step_id = 'later'")
    assert reason == "removed"
    versions = set(rows(runtime, "SELECT version FROM step_runs WHERE status = 'pending'"))
    assert versions == {(runtime.catalog.sequences["welcome"].version,)}
    assert send_due(runtime) == []  # nothing sent again
    assert len(smtp_sink.messages) == 1


def test_a_broken_edit_changes_nothing(runtime: Runtime, tmp_path: Path) -> None:
    signed_up(runtime)
    before = rows(runtime, "SELECT id, status, due_at, version FROM step_runs ORDER BY id")
    (tmp_path / "sequences" / "welcome.yaml").write_text(V2.replace("day: 4", "dya: 4"))
    with pytest.raises(CatalogError) as failure:
        deploy(runtime)
    assert "unknown key 'dya'" in str(failure.value)
    assert rows(runtime, "SELECT id, status, due_at, version FROM step_runs ORDER BY id") == before
    assert "welcome" in runtime.catalog.sequences


def test_a_removed_sequence_holds_its_enrollments_until_retired(
    runtime: Runtime, tmp_path: Path, smtp_sink: Sink
) -> None:
    signed_up(runtime)
    (tmp_path / "sequences" / "welcome.yaml").unlink()
    (tmp_path / "sequences" / "other.yaml").write_text(textwrap.dedent(V1))
    deployed = deploy(runtime)
    assert deployed.removed == ["welcome"]
    assert send_due(runtime) == ["waits (sequence_missing)"]
    assert retire(runtime, "welcome") == 1
    [(status, reason)] = rows(runtime, "SELECT status, exit_reason FROM enrollments")
    assert (status, reason) == ("exited", "retired")
    assert smtp_sink.messages == []


def test_diff_shows_what_an_edit_would_do_and_writes_nothing(
    runtime: Runtime, tmp_path: Path
) -> None:
    import subprocess

    def git(*argv: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *argv], check=True, capture_output=True)

    git("init", "-q")
    git("-c", "user.email=t@example.com", "-c", "user.name=t", "add", "sequences", "templates")
    git("-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "v1")
    signed_up(runtime, "a@example.com")
    signed_up(runtime, "b@example.com")
    before = rows(runtime, "SELECT id, status, due_at, version FROM step_runs ORDER BY id")
    (tmp_path / "sequences" / "welcome.yaml").write_text(textwrap.dedent(V2))
    runtime.reload()
    [change] = diff(runtime, "HEAD")
    assert (change.sequence, change.state) == ("welcome", "changed")
    assert (change.added, change.removed, change.retimed) == (["extra"], ["later"], ["tips"])
    assert change.in_flight == 2
    assert (change.effect.retimed, change.effect.removed, change.effect.added) == (2, 2, 2)
    [against_deployed] = diff(runtime, None)
    assert against_deployed.effect == change.effect
    assert rows(runtime, "SELECT id, status, due_at, version FROM step_runs ORDER BY id") == before
