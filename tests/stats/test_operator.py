"""Operator endpoints over a real database (SQLite and PostgreSQL): sequences, the funnel
built from a scenario of sends, opens, clicks, replies, unsubscribes and a conversion; erasure
that leaves no trace of the person but the same counts; export; /metrics; `nurture stats`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from rich.console import Console
from sqlalchemy import select, text
from sqlmodel import SQLModel

from tests.helpers import make_runtime, samples
from worker.api import metrics, operator, public
from worker.api.app import create_app
from worker.cli.stats import stats_table
from worker.kit.signing import unsubscribe_url
from worker.runtime.process import Runtime
from worker.sending import tracking
from worker.sending.service import send_step
from worker.stats.service import UnknownSequence
from worker.store.db import transaction
from worker.store.steps import claim_due

pytestmark = pytest.mark.integration

TRIAL = """
name: Trial to paid
description: Turn free-trial signups into paying customers.
enroll: {on: trial_started, key: "event.properties.plan"}
exit_on: [subscription_upgraded]
goal: {event: subscription_upgraded, within: 30d}
steps:
  - {id: welcome, day: 1, email: t/welcome}
  - id: pitch
    day: 1
    variants:
      - {email: t/a, weight: 50}
      - {email: t/b, weight: 50}
  - {id: followup, after: 2d, email: t/welcome}
"""
BROKEN = """
name: Broken
enroll: {on: trial_started}
steps:
  - {id: oops, day: 1, email: t/broken}
"""
WELCOME = """---
subject: "Welcome {{ lead.first_name | default('there') }}"
---
<p>Hi {{ lead.first_name | default('there') }}, <a href="https://example.com/start">start here</a>.</p>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
"""
VARIANT = (
    "---\nsubject: \"{{ lead.first_name | default('You') }}, see pricing\"\n---\n<p>Pricing</p>\n"
)
BROKEN_TEMPLATE = '---\nsubject: "x"\n---\n<p>{{ lead.attributes.missing.deeper }}</p>\n'
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ZELDA = {
    "email": "zelda.quimby@example.com",
    "phone": "+4915112345678",
    "external_id": "crm-zq-77",
    "first_name": "Zelda",
    "last_name": "Quimby",
    "timezone": "Europe/Berlin",
    "consent": {"email": True, "sms": True},
    "attributes": {"company": "Quimby Widgets"},
}
TRACES = ("zelda", "quimby", "4915112345678", "crm-zq-77")


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Runtime:
    found = make_runtime(
        tmp_path,
        database_url,
        {
            "sequences/trial.yaml": TRIAL,
            "sequences/broken.yaml": BROKEN,
            "templates/t/welcome.html.j2": WELCOME,
            "templates/t/a.html.j2": VARIANT,
            "templates/t/b.html.j2": VARIANT,
            "templates/t/broken.html.j2": BROKEN_TEMPLATE,
        },
    )
    found.config = found.config.model_copy(update={"api_tokens": TOKEN})
    return found


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    app = create_app(lambda: runtime)
    app.include_router(public.router)
    app.include_router(operator.router)
    app.include_router(metrics.router)
    with TestClient(app) as test_client:
        yield test_client


def post(client: TestClient, kind: str, lead: dict[str, Any], **properties: Any) -> str:
    event = {"type": kind, "lead": lead, "properties": properties}
    response = client.post("/v1/events", json=event, headers=AUTH)
    assert response.status_code == 202, response.text
    return str(response.json()["lead_id"])


def send_due(runtime: Runtime) -> dict[str, str]:
    """Lease what is due and send it to the outbox, as the dispatcher and a worker would."""
    with transaction(runtime.database) as session:
        leased = claim_due(session, datetime.now(UTC), 100)
    return {step: send_step(runtime, step) for step in leased}


def rows(runtime: Runtime, sql: str, **params: Any) -> list[Any]:
    with runtime.database.connect() as connection:
        return [tuple(r) for r in connection.execute(text(sql), params).all()]


def sent_runs(runtime: Runtime, lead_id: str) -> list[tuple[str, str, int | None]]:
    """(id, step, variant) of the lead's sent trial steps, last sent first."""
    return rows(
        runtime,
        "SELECT id, step_id, variant FROM step_runs WHERE lead_id = :l AND status = 'sent' "
        "AND sequence_id = 'trial' ORDER BY sent_at DESC, id DESC",
        l=lead_id,
    )


def funnel(client: TestClient) -> dict[str, Any]:
    response = client.get("/v1/sequences/trial/stats", headers=AUTH)
    assert response.status_code == 200, response.text
    return dict(response.json())


def line(found: dict[str, Any], step: str, variant: int | None = None) -> dict[str, Any]:
    return next(s for s in found["steps"] if (s["step"], s["variant"]) == (step, variant))


def summed(found: dict[str, Any], step: str, name: str) -> Any:
    return sum(s[name] for s in found["steps"] if s["step"] == step)


@pytest.fixture
def scenario(client: TestClient, runtime: Runtime) -> dict[str, str]:
    """Four leads in the trial: Zelda opens, clicks and upgrades (the goal); Ben unsubscribes
    with one click; Cy replies to the welcome email; Dee has no email address."""
    zelda = post(client, "trial_started", ZELDA, plan="pro", note="Zelda Quimby's own trial")
    ben = post(client, "trial_started", {"email": "ben@example.com"}, plan="pro")
    cy = post(client, "trial_started", {"email": "cy@example.com"}, plan="pro")
    dee = post(
        client, "trial_started", {"external_id": "dee-1", "phone": "+14155550123"}, plan="pro"
    )
    outcomes = sorted(send_due(runtime).values())
    assert outcomes.count("sent") == 6  # welcome and pitch for three leads with an address
    assert sum(o.startswith("failed (render_error") for o in outcomes) == 3
    # Zelda opens her welcome (twice: one open), clicks her pitch and upgrades
    [(pitch_run, _, _)] = [r for r in sent_runs(runtime, zelda) if r[1] == "pitch"]
    [(welcome_run, _, _)] = [r for r in sent_runs(runtime, zelda) if r[1] == "welcome"]
    for _ in range(2):
        client.get(urlsplit(tracking.open_url(runtime.config, welcome_run, zelda)).path)
    click = tracking.click_url(runtime.config, pitch_run, zelda, "https://example.com/p?u=zelda")
    assert client.get(urlsplit(click).path, follow_redirects=False).status_code == 302
    post(client, "subscription_upgraded", {"email": ZELDA["email"]})
    # Ben unsubscribes with one click; Cy replies to the welcome email
    one_click = urlsplit(unsubscribe_url(runtime.config, ben, "email")).path
    assert client.post(one_click, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    [(cy_welcome, _, _)] = [r for r in sent_runs(runtime, cy) if r[1] == "welcome"]
    post(client, "replied", {"email": "cy@example.com"}, step_run=cy_welcome, channel="email")
    return {"zelda": zelda, "ben": ben, "cy": cy, "dee": dee}


def test_sequences_are_listed_with_steps_triggers_and_active_counts(
    client: TestClient, scenario: dict[str, str]
) -> None:
    assert client.get("/v1/sequences").status_code == 401
    response = client.get("/v1/sequences", headers=AUTH)
    assert response.status_code == 200
    broken, trial = response.json()["sequences"]
    assert broken["id"] == "broken"
    assert broken["active_enrollments"] == 0  # its only step failed: completed
    assert trial["name"] == "Trial to paid"
    assert trial["description"] == "Turn free-trial signups into paying customers."
    assert len(trial["version"]) == 12
    assert trial["enroll"] == {
        "on": ["trial_started"], "if": None, "key": "event.properties.plan", "reenroll": "never"
    }  # fmt: skip
    assert trial["goal"] == {"event": "subscription_upgraded", "within": "30d"}
    assert [(s["id"], s["channel"], s["timing"]) for s in trial["steps"]] == [
        ("welcome", "email", {"day": 1}),
        ("pitch", None, {"day": 1}),
        ("followup", "email", {"after": "2d"}),
    ]
    assert [v["channel"] for v in trial["steps"][1]["variants"]] == ["email", "email"]
    assert trial["active_enrollments"] == 3  # Zelda upgraded and left


def test_the_funnel_counts_every_step_and_variant(
    client: TestClient, runtime: Runtime, scenario: dict[str, str]
) -> None:
    found = funnel(client)
    assert found["enrollments"] == {
        "total": 4, "active": 3, "completed": 0, "exited": 1, "converted": 1
    }  # fmt: skip
    welcome = line(found, "welcome")
    assert {k: v for k, v in welcome.items() if k not in ("unsubscribed",)} == {
        "step": "welcome", "variant": None, "channel": "email", "scheduled": 0, "sent": 3,
        "delivered": 3, "opened": 1, "clicked": 0, "replied": 1, "failed": 0, "unknown": 0,
        "skipped": {"no_address": 1}, "converted": 1,
    }  # fmt: skip
    assert [s["variant"] for s in found["steps"] if s["step"] == "pitch"] == [0, 1]
    for name, expected in (("sent", 3), ("delivered", 3), ("clicked", 1), ("converted", 1)):
        assert summed(found, "pitch", name) == expected, name
    [(_, _, zelda_variant)] = [r for r in sent_runs(runtime, scenario["zelda"]) if r[1] == "pitch"]
    assert line(found, "pitch", zelda_variant)["clicked"] == 1
    assert summed(found, "pitch", "opened") == 0
    # Ben's unsubscribe names no message: it goes to the last one he was sent
    [(_, last_step, last_variant), *_] = sent_runs(runtime, scenario["ben"])
    assert line(found, last_step, last_variant)["unsubscribed"] == 1
    assert sum(s["unsubscribed"] for s in found["steps"]) == 1
    followup = line(found, "followup")
    assert (followup["scheduled"], followup["sent"], followup["skipped"]) == (3, 0, {"exited": 1})
    for unknown in ("nope", "Bad%00Id", "x" * 300):
        assert client.get(f"/v1/sequences/{unknown}/stats", headers=AUTH).status_code == 404
    assert client.get("/v1/sequences/trial/stats").status_code == 401


def _database_text(runtime: Runtime) -> str:
    """Every row of every table, as text, lower-cased."""
    found = []
    with runtime.database.connect() as connection:
        for table in SQLModel.metadata.sorted_tables:
            for row in connection.execute(select(table)).all():
                found.append(json.dumps([str(v) for v in row]))
    return "\n".join(found).lower()


def test_erasure_leaves_no_trace_of_the_person_and_the_same_counts(
    client: TestClient, runtime: Runtime, scenario: dict[str, str]
) -> None:
    zelda = scenario["zelda"]
    before = funnel(client)
    assert all(trace in _database_text(runtime) for trace in TRACES)
    assert client.delete(f"/v1/leads/{zelda}").status_code == 401
    response = client.delete(f"/v1/leads/{zelda}", headers=AUTH)
    assert response.status_code == 204
    assert response.content == b""
    database = _database_text(runtime)
    for trace in TRACES:
        assert trace not in database, trace
    assert funnel(client) == before
    [lead] = rows(
        runtime,
        "SELECT email, phone, external_id, first_name, last_name, timezone, erased "
        "FROM leads WHERE id = :l",
        l=zelda,
    )
    assert lead[:6] == (None,) * 6
    assert lead[6] in (True, 1)
    assert rows(runtime, "SELECT count(*) FROM messages WHERE lead_id = :l", l=zelda) == [(2,)]
    assert client.delete(f"/v1/leads/{zelda}", headers=AUTH).status_code == 204  # again: fine
    for unknown in ("nobody", "a%00b", "x" * 300):
        assert client.delete(f"/v1/leads/{unknown}", headers=AUTH).status_code == 404
        assert client.get(f"/v1/leads/{unknown}/export", headers=AUTH).status_code == 404
    # an erased person's old links still lead where they led, and record nothing
    [(pitch_run, _, _)] = [r for r in sent_runs(runtime, zelda) if r[1] == "pitch"]
    click = tracking.click_url(runtime.config, pitch_run, zelda, "https://example.com/x")
    assert client.get(urlsplit(click).path, follow_redirects=False).status_code == 302
    assert funnel(client) == before


def test_erasing_an_active_lead_ends_its_enrollments(
    client: TestClient, runtime: Runtime, scenario: dict[str, str]
) -> None:
    cy = scenario["cy"]
    assert client.delete(f"/v1/leads/{cy}", headers=AUTH).status_code == 204
    assert rows(
        runtime, "SELECT status, exit_reason FROM enrollments WHERE lead_id = :l "
        "AND sequence_id = 'trial'", l=cy,
    ) == [("exited", "erased")]  # fmt: skip
    pending = "SELECT count(*) FROM step_runs WHERE lead_id = :l AND status = 'pending'"
    assert rows(runtime, pending, l=cy) == [(0,)]
    found = funnel(client)
    assert found["enrollments"]["active"] == 2
    assert line(found, "followup")["scheduled"] == 2
    assert line(found, "welcome")["replied"] == 1  # still counted, anonymously


def test_export_gives_everything_held_on_the_person(
    client: TestClient, runtime: Runtime, scenario: dict[str, str]
) -> None:
    zelda = scenario["zelda"]
    assert client.get(f"/v1/leads/{zelda}/export").status_code == 401
    response = client.get(f"/v1/leads/{zelda}/export", headers=AUTH)
    assert response.status_code == 200
    data = response.json()
    assert data["lead"]["email"] == ZELDA["email"]
    assert data["lead"]["attributes"] == {"company": "Quimby Widgets"}
    types = [e["type"] for e in data["events"]]
    for kind in ("trial_started", "email_sent", "email_opened", "email_clicked"):
        assert kind in types
    assert types.count("email_opened") == 1
    trial = next(e for e in data["enrollments"] if e["sequence_id"] == "trial")
    assert trial["event"]["properties"]["note"] == "Zelda Quimby's own trial"
    assert [s["step_id"] for s in trial["steps"]] == ["welcome", "pitch", "followup"]
    assert sorted(m["subject"] for m in data["messages"]) == [
        "Welcome Zelda", "Zelda, see pricing"
    ]  # fmt: skip
    assert {m["to"] for m in data["messages"]} == {ZELDA["email"]}
    assert any(t["action"] == "exit" for t in data["timeline"])
    assert client.get("/v1/leads/nobody/export", headers=AUTH).status_code == 404
    client.delete(f"/v1/leads/{zelda}", headers=AUTH)
    after = client.get(f"/v1/leads/{zelda}/export", headers=AUTH).json()
    assert after["lead"]["erased"] is True
    assert after["lead"]["email"] is None
    assert {m["to"] for m in after["messages"]} == {None}


def test_metrics_read_the_work_waiting_from_the_database(
    client: TestClient, runtime: Runtime, scenario: dict[str, str]
) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    now = samples(response.text)
    assert now["nurture_database_up"] == 1.0
    assert now["nurture_oldest_due_step_age_seconds"] == 0.0
    assert now['nurture_steps_due{channel="email"}'] == 0.0
    # three followups wait two days: three days on, the oldest has been due a day
    later = datetime.now(UTC) + timedelta(days=3)
    found = samples(metrics.render(lambda: runtime, lambda: later))
    assert found['nurture_steps_due{channel="email"}'] == 3.0
    assert 86000 < found["nurture_oldest_due_step_age_seconds"] < 86400 + 60


def test_nurture_stats_prints_the_same_funnel(runtime: Runtime, scenario: dict[str, str]) -> None:
    console = Console(record=True, width=220)
    console.print(stats_table(runtime, "trial"))
    printed = console.export_text()
    assert "trial: Trial to paid" in printed
    assert "4 enrolled: 3 active, 0 completed, 1 exited; 1 converted" in printed
    welcome = next(ln for ln in printed.splitlines() if "welcome" in ln)
    cells = [cell.strip() for cell in welcome.split("│")[1:-1]]
    # step, variant, channel, scheduled … unknown, skipped, unsubscribed, converted
    assert cells[:3] == ["welcome", "", "email"]
    assert cells[3:12] == ["0", "3", "3", "1", "0", "1", "0", "0", "no_address 1"]
    assert cells[13] == "1"
    console.print(stats_table(runtime, None))
    overview = console.export_text()
    assert "broken" in overview
    with pytest.raises(UnknownSequence):
        stats_table(runtime, "nope")
