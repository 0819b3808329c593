"""The operations page against a real database: what everyone reads (the switch, what is due,
steps by status, the steps left unknown with links to their leads, the CRM backlog, the
mailbox's last poll, held providers) and what only some may do, refused on the server
otherwise: a viewer's hold is a 403, a cross-site post is a 403, and neither changes a row;
an admin holds and releases every send, recorded with who and why; a marketer pauses,
resumes and retires sequences."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text, update
from sqlmodel import col

from tests.console.signing_in import BEARER, console_runtime, signed_in, text_of
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.holds import hold_provider
from worker.store.polls import record_poll
from worker.store.tables import CrmChangeRow, StepRunRow
from worker.support.deploy import deploy

pytestmark = pytest.mark.integration

HOLD = "/console/operations/sends/hold"
RELEASE = "/console/operations/sends/release"
CONFIRM = "I understand nothing will be sent until released"


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Runtime:
    found = console_runtime(tmp_path, database_url)
    deploy(found)
    return found


def rows(runtime: Runtime, sql: str) -> list[tuple[Any, ...]]:
    with runtime.database.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql))]


def switches(runtime: Runtime) -> list[tuple[Any, ...]]:
    return rows(runtime, "SELECT name, value, changed_by FROM switches ORDER BY name")


def actions(runtime: Runtime) -> list[tuple[Any, ...]]:
    return rows(runtime, "SELECT actor, action, target, reason, lead_id FROM actions ORDER BY id")


def enroll(client: TestClient, email: str) -> str:
    event = {"type": "trial_started", "lead": {"email": email}}
    answer = client.post("/v1/events", json=event, headers=BEARER)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["lead_id"])


def test_everyone_reads_the_page_and_only_an_admin_sees_the_switch(runtime: Runtime) -> None:
    for name, can_hold, can_pause in (
        ("vera", False, False),
        ("sam", False, False),
        ("mia", False, True),
        ("ada", True, True),
    ):
        with signed_in(runtime, name) as client:
            page = client.get("/console/operations")
        assert page.status_code == 200, name
        words = text_of(page)
        assert "Sends are running." in words
        assert ("Hold all sends" in words) is can_hold, name
        assert (CONFIRM in words) is can_hold, name
        assert (">Pause</button>" in page.text) is can_pause, name


def test_a_viewer_posting_a_hold_is_refused_and_nothing_changes(runtime: Runtime) -> None:
    for name in ("vera", "sam", "mia"):
        with signed_in(runtime, name) as client:
            answer = client.post(HOLD, data={"reason": "trying", "confirm": "yes"})
        assert answer.status_code == 403, name
        role = {"vera": "viewer", "sam": "support", "mia": "marketer"}[name]
        assert f"You are signed in as {name} ({role}); this needs admin." in text_of(answer)
    with signed_in(runtime, "sam") as client:
        answer = client.post("/console/operations/sequences/trial/pause",
                             data={"reason": "trying", "confirm": "yes"})  # fmt: skip
    assert answer.status_code == 403
    assert "this needs marketer or admin" in text_of(answer)
    assert switches(runtime) == []
    assert actions(runtime) == []


def test_a_cross_site_post_is_refused_and_nothing_changes(runtime: Runtime) -> None:
    with signed_in(runtime, "ada") as client:
        for headers in (
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
        ):
            answer = client.post(HOLD, data={"reason": "x", "confirm": "yes"}, headers=headers)
            assert answer.status_code == 403, headers
            assert "posted from another site" in text_of(answer)
        # the same form from the console itself goes through
        same = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
        assert switches(runtime) == []
        answer = client.post(RELEASE, data={}, headers=same)
        assert answer.status_code == 303
    assert actions(runtime) == [("user:ada", "release_sends", "sends", None, None)]


def test_an_admin_holds_every_send_with_a_reason_and_releases_them(runtime: Runtime) -> None:
    with signed_in(runtime, "ada") as client:
        lead_id = enroll(client, "ana@example.com")
        no_reason = client.post(HOLD, data={"reason": " ", "confirm": "yes"})
        assert no_reason.status_code == 422
        assert "Reason: say why every send is held." in text_of(no_reason)
        unconfirmed = client.post(HOLD, data={"reason": "wrong prices"})
        assert unconfirmed.status_code == 422
        assert CONFIRM in text_of(unconfirmed)
        assert switches(runtime) == []

        held = client.post(HOLD, data={"reason": "Incident: wrong prices", "confirm": "yes"})
        assert (held.status_code, held.headers["location"]) == (
            303,
            "/console/operations?done=held",
        )
        assert switches(runtime) == [("sends", "paused", "user:ada")]
        page = text_of(client.get(held.headers["location"]))
        assert "Every send is held." in page
        assert "hold sends at" in page
        assert "by user:ada: Incident: wrong prices" in page
        assert "Release sends" in page
        assert "Hold all sends" not in page

        released = client.post(RELEASE, data={"reason": "prices fixed"})
        assert released.status_code == 303
        assert "Sends are running." in text_of(client.get("/console/operations"))
    assert switches(runtime) == [("sends", "running", "user:ada")]
    assert actions(runtime) == [
        ("user:ada", "hold_sends", "sends", "Incident: wrong prices", None),
        ("user:ada", "release_sends", "sends", "prices fixed", None),
    ]
    # the steps it held were not lost
    assert rows(runtime, f"SELECT count(*) FROM step_runs WHERE lead_id = '{lead_id}'") == [(2,)]


def test_a_marketer_pauses_and_resumes_a_sequence(runtime: Runtime) -> None:
    with signed_in(runtime, "mia") as client:
        unconfirmed = client.post("/console/operations/sequences/trial/pause",
                                  data={"reason": "copy review"})  # fmt: skip
        assert unconfirmed.status_code == 422
        assert "Tick the box to hold every send of trial." in text_of(unconfirmed)
        missing = client.post("/console/operations/sequences/nope/pause",
                              data={"reason": "x", "confirm": "yes"})  # fmt: skip
        assert missing.status_code == 404
        assert "No sequence nope." in text_of(missing)
        assert switches(runtime) == []

        paused = client.post("/console/operations/sequences/trial/pause",
                             data={"reason": "copy review", "confirm": "yes"})  # fmt: skip
        assert paused.headers["location"] == "/console/operations?done=paused"
        page = client.get("/console/operations")
        assert "paused" in text_of(page)
        assert ">Resume</button>" in page.text
        resumed = client.post("/console/operations/sequences/trial/resume", data={})
        assert resumed.headers["location"] == "/console/operations?done=resumed"
    assert switches(runtime) == [("sequence:trial", "running", "user:mia")]
    assert actions(runtime) == [
        ("user:mia", "pause_sequence", "sequence:trial", "copy review", None),
        ("user:mia", "resume_sequence", "sequence:trial", None, None),
    ]


def test_a_removed_sequence_is_retired_from_the_page(runtime: Runtime, tmp_path: Path) -> None:
    with signed_in(runtime, "ada") as client:
        lead_id = enroll(client, "bo@example.com")
        refused = client.post("/console/operations/sequences/trial/retire",
                              data={"reason": "gone", "confirm": "yes"})  # fmt: skip
        assert refused.status_code == 422
        assert "Trial is still in sequences/: remove its file first." in text_of(refused)
        (tmp_path / "sequences" / "trial.yaml").unlink()
        (tmp_path / "sequences" / "other.yaml").write_text(
            textwrap.dedent(
                "name: Other\nenroll: {on: x}\nsteps:\n  - {id: a, day: 1, email: t/welcome}\n"
            )
        )
        deploy(runtime)
        page = client.get("/console/operations")
        assert "file removed: held until retired" in text_of(page)
        assert "End its 1 enrollment" in text_of(page)
        retired = client.post("/console/operations/sequences/trial/retire",
                              data={"reason": "campaign over", "confirm": "yes"})  # fmt: skip
        assert retired.headers["location"] == "/console/operations?done=retired"
    assert rows(runtime, "SELECT status, exit_reason FROM enrollments") == [("exited", "retired")]
    assert actions(runtime) == [
        ("user:ada", "retire", "trial", "campaign over", lead_id),
        ("user:ada", "retire_sequence", "sequence:trial", "campaign over", None),
    ]


def test_the_page_shows_due_work_unknown_steps_the_crm_backlog_and_the_mailbox(
    runtime: Runtime,
) -> None:
    now = datetime.now(UTC)
    with signed_in(runtime, "vera") as client:
        lead_id = enroll(client, "cy@example.com")
        with transaction(runtime.database) as session:
            welcome = col(StepRunRow.step_id) == "welcome"
            late = now - timedelta(minutes=7)
            session.execute(update(StepRunRow).where(welcome).values(due_at=late))
            tour = col(StepRunRow.step_id) == "tour"
            session.execute(
                update(StepRunRow).where(tour).values(status="unknown", claimed_at=late)
            )
            session.execute(update(CrmChangeRow).values(last_error="HubSpot answered 503"))
        with transaction(runtime.database) as session:
            record_poll(session, "reply@example.com/INBOX", now - timedelta(minutes=2))
            hold_provider(session, "twilio", now + timedelta(minutes=30), now)
        page = client.get("/console/operations")
    words = text_of(page)
    assert "1 step due; the oldest has waited 7 min" in words
    assert f'<a href="/console/leads/{lead_id}">{lead_id}</a>' in page.text
    assert "trial tour email" in words
    pending = rows(runtime, "SELECT count(*) FROM crm_outbox WHERE status = 'pending'")[0][0]
    assert f"{pending} change{'' if pending == 1 else 's'} waiting to be pushed" in words
    assert "Last error: HubSpot answered 503" in words
    assert "reply@example.com/INBOX: last read" in words
    assert "(2 min ago)" in words
    assert "twilio refused our credentials: held until" in words
    assert "pending 1" in words
    assert "unknown 1" in words
