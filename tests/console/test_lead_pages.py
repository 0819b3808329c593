"""The leads pages against a real database: the search and the lead page everyone reads; the
forms that change a lead, refused on the server for a role without the permission (403, nothing
changes) and checked before anything changes (422 on the page); every change recorded with who
and why; a lead's own data shown inert."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, text
from sqlmodel import Session, col

from tests.console.signing_in import PEOPLE, signed_in, text_of
from tests.support.lead_project import ANA, lead_runtime, post
from worker.accounts.users import add_user
from worker.runtime.process import Runtime
from worker.store.tables import EnrollmentRow, LeadRow

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Runtime:
    found = lead_runtime(tmp_path, database_url)
    for name, role in PEOPLE.items():
        add_user(found.database, name, role, PASSWORD)
    return found


@pytest.fixture
def ana(runtime: Runtime) -> str:
    return post(runtime, "trial_started", ANA)


def rows(runtime: Runtime, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with runtime.database.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql), params)]


def actions(runtime: Runtime) -> list[tuple[Any, ...]]:
    return rows(runtime, "SELECT actor, action, target, reason FROM actions ORDER BY id")


def enrollments(runtime: Runtime) -> list[tuple[Any, ...]]:
    """(sequence, key, status, exit reason, paused) of every enrollment."""
    with Session(runtime.database) as session:
        found = session.execute(select(EnrollmentRow)).scalars()
        return sorted((e.sequence_id, e.key, e.status, e.exit_reason, e.pause is not None)
                      for e in found)  # fmt: skip


def lead_row(runtime: Runtime, lead_id: str) -> LeadRow:
    with Session(runtime.database) as session:
        found = session.get(LeadRow, lead_id)
        assert found is not None
        return found


# -- reading -----------------------------------------------------------------------------------


def test_search_finds_the_lead_and_links_to_its_page(runtime: Runtime, ana: str) -> None:
    with signed_in(runtime, "vera") as client:
        empty = client.get("/console/leads")
        found = client.get("/console/leads", params={"q": "(415) 555-0134"})
        none = client.get("/console/leads", params={"q": "nobody@example.com"})
        short = client.get("/console/leads", params={"q": "a"})
    assert empty.status_code == 200
    assert '<label for="q">Search leads</label>' in empty.text
    assert found.status_code == 200
    assert f'href="/console/leads/{ana}"' in found.text
    assert "Ana Lovelace ana@example.com +14155550134 crm-42 – 2" in text_of(found)
    assert "No lead matches nobody@example.com" in text_of(none)
    assert short.status_code == 422
    assert "Type at least 2 characters" in text_of(short)


def test_an_unknown_lead_is_a_404_page_saying_so(runtime: Runtime) -> None:
    with signed_in(runtime, "vera") as client:
        answer = client.get("/console/leads/no-such-lead")
    assert answer.status_code == 404
    assert "No lead 'no-such-lead'" in text_of(answer)


def test_a_viewer_reads_the_page_but_sees_no_pause_and_a_pause_posted_is_refused(
    runtime: Runtime, ana: str
) -> None:
    with signed_in(runtime, "vera") as client:
        page = client.get(f"/console/leads/{ana}")
        refused = client.post(f"/console/leads/{ana}/pause", data={"reason": "mine"})
        export = client.post(f"/console/leads/{ana}/export")
    assert page.status_code == 200
    assert "Timeline" in text_of(page)
    assert "trial" in text_of(page)
    assert ">Pause</button>" not in page.text
    assert ">Exit</button>" not in page.text
    assert refused.status_code == 403
    assert "You are signed in as vera (viewer)" in text_of(refused)
    assert export.status_code == 403
    assert lead_row(runtime, ana).pause is None
    assert all(not paused for *_, paused in enrollments(runtime))
    assert actions(runtime) == []


def test_a_name_holding_a_script_is_shown_as_text(runtime: Runtime) -> None:
    lead_id = post(runtime, "signed_up", {"email": "x@example.com",
                                          "first_name": "<script>alert(1)</script>"})  # fmt: skip
    with signed_in(runtime, "vera") as client:
        page = client.get(f"/console/leads/{lead_id}")
        found = client.get("/console/leads", params={"q": "<script"})
    for answer in (page, found):
        assert "<script>alert(1)" not in answer.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in answer.text


# -- acting ------------------------------------------------------------------------------------


def test_support_pauses_with_a_reason_and_it_is_recorded(runtime: Runtime, ana: str) -> None:
    with signed_in(runtime, "sam") as client:
        page = client.get(f"/console/leads/{ana}")
        answer = client.post(f"/console/leads/{ana}/pause",
                             data={"reason": "on holiday", "sequence": ""})  # fmt: skip
        after = client.get(answer.headers["location"])
    assert ">Pause</button>" in page.text
    assert "Pause holds 4 scheduled steps" in text_of(page)
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/console/leads/{ana}?done=paused"
    assert "Paused." in text_of(after)
    pause = lead_row(runtime, ana).pause
    assert pause is not None
    assert pause["reason"] == "on holiday"
    assert actions(runtime) == [("user:sam", "pause", None, "on holiday")]
    assert "paused by user:sam (on holiday) until resumed" in text_of(after)


def test_a_pause_until_a_time_is_read_in_the_viewers_zone(runtime: Runtime, ana: str) -> None:
    ends = (datetime.now(ZoneInfo("America/New_York")) + timedelta(days=2)).replace(
        second=0, microsecond=0
    )
    with signed_in(runtime, "sam") as client:
        answer = client.post(f"/console/leads/{ana}/pause", data={
            "reason": "call on Friday", "sequence": "trial",
            "until": ends.strftime("%Y-%m-%dT%H:%M"), "tz": "America/New_York",
        })  # fmt: skip
    assert answer.status_code == 303
    with Session(runtime.database) as session:
        trial = session.execute(
            select(EnrollmentRow).where(col(EnrollmentRow.sequence_id) == "trial")
        ).scalar_one()
    pause = trial.pause
    assert pause is not None
    assert datetime.fromisoformat(pause["until"]) == ends.astimezone(UTC)


def test_a_pause_until_a_time_past_is_refused_and_nothing_changes(
    runtime: Runtime, ana: str
) -> None:
    with signed_in(runtime, "sam") as client:
        answer = client.post(f"/console/leads/{ana}/pause", data={
            "reason": "too late", "until": "2020-01-01T09:00", "tz": "Europe/Berlin",
        })  # fmt: skip
        blank = client.post(f"/console/leads/{ana}/pause", data={"reason": "  "})
    assert answer.status_code == 422
    words = text_of(answer)
    assert "Until: 2020-01-01 09:00 (Europe/Berlin) is in the past" in words
    assert "Nothing was changed." in words
    assert 'value="too late"' in answer.text  # the form keeps what was typed
    assert blank.status_code == 422
    assert "Reason: say why the lead is paused" in text_of(blank)
    assert lead_row(runtime, ana).pause is None
    assert actions(runtime) == []


def test_resume_and_exit_from_every_sequence(runtime: Runtime, ana: str) -> None:
    with signed_in(runtime, "sam") as client:
        client.post(f"/console/leads/{ana}/pause", data={"reason": "holiday"})
        resumed = client.post(f"/console/leads/{ana}/resume", data={"reason": "back"})
        page = client.get(f"/console/leads/{ana}")
        exited = client.post(f"/console/leads/{ana}/exit", data={"reason": "bought already"})
        again = client.post(f"/console/leads/{ana}/exit", data={"reason": "twice"})
    assert resumed.headers["location"].endswith("?done=resumed")
    assert "Exit ends 4 scheduled steps" in text_of(page)
    assert exited.headers["location"].endswith("?done=exited")
    assert enrollments(runtime) == [("texts", None, "exited", "manual", False),
                                    ("trial", None, "exited", "manual", False)]  # fmt: skip
    assert again.status_code == 422
    assert "not enrolled in any sequence" in text_of(again)
    assert [a[1:] for a in actions(runtime)] == [
        ("pause", None, "holiday"),
        ("resume", None, "back"),
        ("exit", None, "bought already"),
    ]


def test_enrolling_in_a_keyed_sequence_needs_its_key(runtime: Runtime, ana: str) -> None:
    with signed_in(runtime, "sam") as client:
        missing = client.post(f"/console/leads/{ana}/enroll", data={"sequence": "cart"})
        keyed = client.post(f"/console/leads/{ana}/enroll",
                            data={"sequence": "cart", "key": "c-77", "reason": "phoned"})  # fmt: skip
        anchored = client.post(f"/console/leads/{ana}/enroll", data={
            "sequence": "webinar", "anchor": "2031-03-10T16:00", "tz": "Europe/Berlin"})  # fmt: skip
    assert missing.status_code == 422
    assert "Key (properties.cart_token)" in text_of(missing)
    assert keyed.status_code == 303, keyed.text
    assert anchored.status_code == 303, anchored.text
    assert ("cart", "c-77", "active", None, False) in enrollments(runtime)
    [(anchor,)] = rows(runtime, "SELECT anchor_at FROM enrollments WHERE sequence_id = 'webinar'")
    assert str(anchor).startswith("2031-03-10 15:00")
    assert ("user:sam", "enroll", "cart", "phoned") in actions(runtime)


def test_unsubscribe_and_resubscribe_a_channel(runtime: Runtime, ana: str) -> None:
    form = {"channel": "email", "action": "unsubscribe", "reason": "asked by phone"}
    with signed_in(runtime, "sam") as client:
        off = client.post(f"/console/leads/{ana}/subscription", data=form)
        assert lead_row(runtime, ana).suppressions == {"email": "support"}
        on = client.post(f"/console/leads/{ana}/subscription",
                         data={**form, "action": "resubscribe"})  # fmt: skip
    assert off.headers["location"].endswith("?done=unsubscribed")
    assert on.headers["location"].endswith("?done=resubscribed")
    assert lead_row(runtime, ana).suppressions == {}
    assert [a[:3] for a in actions(runtime)] == [("user:sam", "unsubscribe", "email"),
                                                 ("user:sam", "resubscribe", "email")]  # fmt: skip


def test_export_downloads_everything_with_who_acted(runtime: Runtime, ana: str) -> None:
    with signed_in(runtime, "sam") as client:
        client.post(f"/console/leads/{ana}/pause", data={"reason": "holiday"})
        answer = client.post(f"/console/leads/{ana}/export")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    assert "attachment" in answer.headers["content-disposition"]
    found = answer.json()
    assert found["lead"]["email"] == "ana@example.com"
    assert [a["action"] for a in found["actions"]] == ["pause"]
    assert [a[1] for a in actions(runtime)] == ["pause", "export"]


def test_only_an_admin_erases_and_only_with_the_email_typed(runtime: Runtime, ana: str) -> None:
    with signed_in(runtime, "sam") as client:
        refused = client.post(f"/console/leads/{ana}/erase", data={"confirm": "ana@example.com"})
    with signed_in(runtime, "ada") as client:
        page = client.get(f"/console/leads/{ana}")
        wrong = client.post(f"/console/leads/{ana}/erase", data={"confirm": "ana"})
        assert lead_row(runtime, ana).email == "ana@example.com"
        done = client.post(f"/console/leads/{ana}/erase",
                           data={"confirm": "ANA@example.com", "reason": "GDPR request"})  # fmt: skip
        after = client.get(done.headers["location"])
    assert refused.status_code == 403
    assert ">Erase</button>" in page.text
    assert wrong.status_code == 422
    assert "Confirm: type the lead's email address" in text_of(wrong)
    assert done.status_code == 303
    assert lead_row(runtime, ana).email is None
    assert "This person was erased." in text_of(after)
    assert ("user:ada", "erase", None, "GDPR request") in actions(runtime)
