"""`nurture simulate`, `preview` and `test` as a marketer runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from worker.cli.main import app

SEQUENCE = """\
name: Trial
enroll: {on: trial_started}
exit_on: [subscription_upgraded]
window: {days: [mon, tue, wed, thu, fri], hours: "09:00-18:00"}
steps:
  - {id: welcome, day: 1, email: trial/welcome}
  - {id: tour, day: 3, email: trial/welcome}
  - {id: nudge, after: 2h, sms: trial/nudge, only_if: "lead.phone"}
"""
WELCOME = """---
subject: "Welcome, {{ lead.first_name | default('there') }}"
preheader: Your trial starts now
---
<p>Hi {{ lead.first_name | default('there') }}, this is {{ step.id }}.</p>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
"""
LEAD = {
    "email": "ana@example.com",
    "first_name": "Ana",
    "timezone": "Europe/Berlin",
    "phone": "+4915112345678",
    "consent": {"sms": True},
}
KEYS = ["at", "sequence", "step", "action", "channel", "reason", "subject"]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "sequences" / "tests").mkdir(parents=True)
    (tmp_path / "templates" / "trial").mkdir(parents=True)
    (tmp_path / "sequences" / "trial.yaml").write_text(SEQUENCE)
    (tmp_path / "templates" / "trial" / "welcome.html.j2").write_text(WELCOME)
    (tmp_path / "templates" / "trial" / "nudge.sms.j2").write_text("Hi {{ lead.first_name }}!")
    (tmp_path / "lead.json").write_text(json.dumps(LEAD))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_simulate_json_is_one_object_per_line_with_every_key_in_order(project: Path) -> None:
    (project / "events.jsonl").write_text(
        '{"type": "trial_started", "occurred_at": "+0s"}\n'
        "# comments and blank lines are allowed\n\n"
        '{"type": "subscription_upgraded", "occurred_at": "+3d"}\n'
    )
    code, output = run(
        "simulate", "--lead", "lead.json", "--events", "events.jsonl",
        "--start", "2026-11-20T09:00:00Z", "--json",
    )  # fmt: skip
    assert code == 0, output
    lines = [json.loads(line) for line in output.splitlines()]
    assert all(list(line) == KEYS for line in lines)
    assert [(x["at"], x["step"], x["action"]) for x in lines] == [
        ("2026-11-20T09:00:00Z", None, "enroll"),
        ("2026-11-20T09:00:00Z", "welcome", "send"),
        ("2026-11-23T08:00:00Z", "tour", "send"),  # Sunday 10:00 Berlin → Monday 09:00
        ("2026-11-23T09:00:00Z", None, "exit"),
    ]
    assert lines[1]["subject"] == "Welcome, Ana"
    assert lines[1]["channel"] == "email"
    assert lines[3]["reason"] == "subscription_upgraded"


def test_simulate_enrolls_at_start_when_a_sequence_is_named(project: Path) -> None:
    code, output = run(
        "simulate", "trial", "--lead", "lead.json", "--start", "2026-11-20T09:00:00Z",
        "--until", "10d", "--json",
    )  # fmt: skip
    assert code == 0, output
    steps = [json.loads(line)["step"] for line in output.splitlines()]
    assert steps == [None, "welcome", "tour", "nudge", None]


def test_simulate_prints_a_table_for_people(project: Path) -> None:
    code, output = run(
        "simulate", "trial", "--lead", "lead.json", "--start", "2026-11-20T09:00:00Z"
    )
    assert code == 0, output
    assert "Welcome, Ana" in output
    assert "Fri 20 Nov 10:00" in output  # local time of the lead


def test_simulate_names_the_line_and_field_of_a_bad_event(project: Path) -> None:
    (project / "events.jsonl").write_text(
        '{"type": "trial_started"}\n{"type": "Trial Started"}\n{"type": "x", "occurred_at": "soon"}\n'
    )
    code, output = run("simulate", "--lead", "lead.json", "--events", "events.jsonl")
    assert code == 1
    assert "events.jsonl:2: type:" in output
    assert "events.jsonl:3: occurred_at:" in output


def test_simulate_rejects_a_bad_lead_naming_the_field(project: Path) -> None:
    (project / "bad.json").write_text(json.dumps({**LEAD, "phone": "12", "timezone": "Mars/Base"}))
    code, output = run("simulate", "trial", "--lead", "bad.json")
    assert code == 1
    assert "bad.json: phone:" in output
    assert "bad.json: timezone:" in output
    (project / "broken.json").write_text('{"email": ')
    code, output = run("simulate", "trial", "--lead", "broken.json")
    assert code == 1
    assert "broken.json:1:" in output


def test_preview_renders_subject_text_and_html(project: Path) -> None:
    code, output = run("preview", "trial", "welcome", "--lead", "lead.json")
    assert code == 0, output
    assert "Subject: Welcome, Ana" in output
    assert "Preheader: Your trial starts now" in output
    assert "<p>Hi Ana, this is welcome.</p>" in output
    code, output = run("preview", "trial", "nudge")
    assert code == 0, output
    assert "(1 segment)" in output
    code, output = run("preview", "trial", "nope")
    assert code == 1
    assert "no step 'nope' in trial (steps: welcome, tour, nudge)" in output


def test_sequence_tests_pass_and_fail_with_the_line_of_the_expectation(project: Path) -> None:
    passing = """\
name: the series
sequences: [trial]
lead: {email: ana@example.com, timezone: Europe/Berlin}
start: 2026-11-20T09:00:00Z
expect:
  - {at: +0s, step: welcome, subject: Welcome}
  - {at: "2026-11-23T08:00:00Z", step: tour}
never:
  - {step: nudge, action: send}
"""
    failing = passing.replace('"2026-11-23T08:00:00Z"', "+2d").replace("the series", "wrong day")
    (project / "sequences" / "tests" / "trial.yaml").write_text(passing + "---\n" + failing)
    code, output = run("test")
    assert code == 1
    assert "PASS trial.yaml: the series" in output
    assert "FAIL trial.yaml: wrong day" in output
    assert "trial.yaml:17: expected {at: +2d, step: tour}, not found; the timeline has" in output
    assert "1 passed, 1 failed" in output
