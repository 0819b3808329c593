"""The copy of each email as sent, on SQLite and PostgreSQL: written compressed with the
message row at acceptance (a text keeps only its body), shown by the console in a sandboxed
frame under a Content-Security-Policy that loads nothing (so showing it is never an open or a
click), exported and erased with the person, and pruned after `copy_retention_days`."""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.console.signing_in import signed_in, text_of
from tests.support.lead_project import ANA, lead_runtime, post, run_due
from worker.accounts.roles import Role
from worker.accounts.users import add_user
from worker.runtime.process import Runtime
from worker.support.copies import FRAME_POLICY, prune_old_copies
from worker.support.privacy import erase, export
from worker.tasks import make_app

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Runtime:
    found = lead_runtime(tmp_path, database_url)
    add_user(found.database, "sam", Role.SUPPORT, PASSWORD)
    return found


def messages(runtime: Runtime) -> list[dict[str, Any]]:
    with runtime.database.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT id, channel, subject, body, sent_copy, sent_at FROM messages ORDER BY sent_at"
            )
        ).mappings()
        return [dict(row) for row in rows]


def engagement(runtime: Runtime) -> int:
    with runtime.database.connect() as connection:
        return int(
            connection.execute(
                text("SELECT count(*) FROM events WHERE type IN ('email_opened', 'email_clicked')")
            ).scalar_one()
        )


def sent_email(runtime: Runtime) -> tuple[str, dict[str, Any]]:
    lead_id = post(runtime, "trial_started", ANA)
    run_due(runtime)
    [message] = messages(runtime)
    return lead_id, message


def test_an_email_keeps_its_copy_compressed_and_a_text_only_its_body(runtime: Runtime) -> None:
    _, message = sent_email(runtime)
    packed = bytes(message["sent_copy"])
    copy = json.loads(zlib.decompress(packed))
    assert copy["subject"] == "Welcome, Ana" == message["subject"]
    assert "start here" in copy["text"]
    assert "/t/c/" in copy["html"]  # as sent: the tracked link
    assert len(packed) < len(json.dumps(copy).encode())
    # a text message: its body is the record, there is no copy
    post(runtime, "trial_started", {"email": "tex@example.com", "phone": "+14155550199",
                                    "consent": {"sms": True}})  # fmt: skip
    noon = (datetime.now(UTC) + timedelta(days=1)).replace(hour=12)  # past the quiet hours
    run_due(runtime, noon)
    texts = [m for m in messages(runtime) if m["channel"] == "sms"]
    assert texts
    assert all(m["sent_copy"] is None and m["body"] for m in texts)


def test_the_console_shows_a_copy_sandboxed_and_that_is_no_open_or_click(
    runtime: Runtime,
) -> None:
    lead_id, message = sent_email(runtime)
    with signed_in(runtime, "sam") as client:
        page = client.get(f"/console/leads/{lead_id}?copy={message['id']}")
        frame = client.get(f"/console/messages/{message['id']}/copy")
        plain = client.get(f"/console/leads/{lead_id}?copy={message['id']}&part=text")
    assert page.status_code == 200
    assert f'<iframe sandbox src="/console/messages/{message["id"]}/copy"' in page.text
    assert "Copy of Welcome, Ana" in text_of(page)
    assert frame.status_code == 200
    assert frame.headers["content-security-policy"] == FRAME_POLICY
    assert FRAME_POLICY == ("sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'")
    assert frame.headers["x-content-type-options"] == "nosniff"
    assert '<base target="_blank">' in frame.text  # a click in the frame opens nothing
    assert "start here" in frame.text
    assert "<pre" in plain.text
    assert "start here" in text_of(plain)
    assert "<iframe" not in plain.text
    assert engagement(runtime) == 0


def test_a_copy_is_the_leads_own_and_a_missing_one_says_why(runtime: Runtime) -> None:
    _, message = sent_email(runtime)
    other = post(runtime, "signed_up", {"email": "bob@example.com"})
    with signed_in(runtime, "sam") as client:
        elsewhere = client.get(f"/console/leads/{other}?copy={message['id']}")
        unknown = client.get("/console/messages/nope/copy")
    assert elsewhere.status_code == 404
    assert "is not this lead's" in text_of(elsewhere)
    assert "<iframe" not in elsewhere.text
    assert unknown.status_code == 404
    assert unknown.headers["content-security-policy"] == FRAME_POLICY


def test_the_copy_is_exported_and_erased_with_the_person(runtime: Runtime) -> None:
    lead_id, message = sent_email(runtime)
    [exported] = export(runtime, lead_id)["messages"]
    assert exported["copy"]["subject"] == "Welcome, Ana"
    assert "sent_copy" not in exported
    erase(runtime, lead_id)
    [after] = messages(runtime)
    assert (after["sent_copy"], after["subject"]) == (None, None)
    with signed_in(runtime, "sam") as client:
        gone = client.get(f"/console/messages/{message['id']}/copy")
    assert gone.status_code == 404
    assert "no copy of message" in gone.text


def test_copies_older_than_the_retention_are_pruned(runtime: Runtime) -> None:
    sent_email(runtime)
    post(runtime, "trial_started", {"email": "bob@example.com"})
    run_due(runtime)
    old, recent = messages(runtime)
    with runtime.database.begin() as connection:
        connection.execute(
            text("UPDATE messages SET sent_at = :at WHERE id = :id"),
            {"at": datetime.now(UTC) - timedelta(days=91), "id": old["id"]},
        )
    assert prune_old_copies(runtime, datetime.now(UTC)) == 1
    kept = {m["id"]: m["sent_copy"] is not None for m in messages(runtime)}
    assert kept == {old["id"]: False, recent["id"]: True}
    assert prune_old_copies(runtime, datetime.now(UTC)) == 0
    runtime.config = runtime.config.model_copy(update={"copy_retention_days": 1})
    assert prune_old_copies(runtime, datetime.now(UTC) + timedelta(days=2)) == 1


def test_the_scheduler_prunes_a_few_times_a_day(tmp_path: Path) -> None:
    from worker.config import Settings

    schedule = make_app(Settings(home=tmp_path)).conf.beat_schedule
    assert schedule["prune"]["task"] == "messages.prune"
    assert schedule["prune"]["schedule"] <= 86400
