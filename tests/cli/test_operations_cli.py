"""`nurture lead …`, `nurture sends …` and `nurture sequences …` as support and operators run
them: Typer's runner against a real SQLite database and a small sequence library in a
temporary folder, asserting what they print and the rows they leave."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from tests.helpers import write_project
from tests.library import unsubscribe_template, welcome_project
from worker.cli.main import app
from worker.config import settings
from worker.store.migrate import upgrade

WELCOME = """
name: Welcome
enroll: {on: signed_up}
steps:
  - {id: hello, day: 1, email: w/hello}
  - {id: tips, day: 3, email: w/hello}
  - {id: later, day: 5, email: w/hello}
"""
EDITED = """
name: Welcome
enroll: {on: signed_up}
steps:
  - {id: hello, day: 1, email: w/hello}
  - {id: tips, day: 4, email: w/hello}
  - {id: extra, day: 6, email: w/hello}
"""
ANA = "ana@example.com"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An installation: sequence files, a migrated SQLite database, the first version deployed
    and Ana signed up (through `nurture event`, as a form would)."""
    write_project(tmp_path, welcome_project(WELCOME, unsubscribe_template("Hello")))
    url = f"sqlite:///{tmp_path / 'nurture.db'}"
    for name, value in {
        "DATABASE_URL": url,
        "HOME": str(tmp_path / ".nurture"),
        "SEQUENCES_DIR": str(tmp_path / "sequences"),
        "TEMPLATES_DIR": str(tmp_path / "templates"),
        "OUTBOX_DIR": str(tmp_path / "outbox"),
    }.items():
        monkeypatch.setenv(f"NURTURE_{name}", value)
    monkeypatch.chdir(tmp_path)
    settings.cache_clear()
    upgrade(url)
    try:
        assert run("sequences", "reload") == (0, "ok: 1 sequence(s) loaded\n")
        code, output = run("event", "signed_up", "--email", ANA)
        assert code == 0, output
        assert json.loads(output)["enrolled"] == ["welcome"]
        yield tmp_path
    finally:
        settings.cache_clear()


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def rows(project: Path, sql: str) -> list[tuple[Any, ...]]:
    engine = create_engine(f"sqlite:///{project / 'nurture.db'}")
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql))]
    finally:
        engine.dispose()


def due(project: Path) -> dict[str, datetime]:
    """Each step's due time (SQLite keeps them naive, in UTC)."""
    found = rows(project, "SELECT step_id, due_at FROM step_runs WHERE due_at IS NOT NULL")
    return {step: datetime.fromisoformat(str(at)).replace(tzinfo=UTC) for step, at in found}


def pauses(project: Path, table: str) -> list[Any]:
    """The `pause` column of every row of `leads` or `enrollments` (JSON; null when none)."""
    return [json.loads(value) for (value,) in rows(project, f"SELECT pause FROM {table}")]


def steps(project: Path) -> dict[str, tuple[str, str | None]]:
    found = rows(project, "SELECT step_id, status, reason FROM step_runs")
    return {step: (status, reason) for step, status, reason in found}


def test_lead_show_prints_the_lead_with_its_enrollment_and_steps(project: Path) -> None:
    code, output = run("lead", "show", ANA)
    assert code == 0, output
    shown = json.loads(output)
    assert shown["email"] == ANA
    [enrollment] = shown["enrollments"]
    assert (enrollment["sequence"], enrollment["status"], enrollment["paused"]) == (
        "welcome",
        "active",
        False,
    )
    assert [(s["step"], s["status"]) for s in enrollment["steps"]] == [
        ("hello", "pending"),
        ("tips", "pending"),
        ("later", "pending"),
    ]


def test_lead_commands_name_an_unknown_email_and_exit_1(project: Path) -> None:
    for command in ("show", "pause", "resume"):
        assert run("lead", command, "nobody@example.com") == (
            1,
            "no lead with email nobody@example.com\n",
        )
    code, output = run("lead", "exit", "nobody@example.com", "--sequence", "welcome")
    assert (code, output) == (1, "no lead with email nobody@example.com\n")


def test_lead_pause_until_moves_the_steps_and_resume_ends_the_pause(project: Path) -> None:
    before = due(project)
    until = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    code, output = run("lead", "pause", ANA, "--reason", "on holiday", "--until", until.isoformat())
    assert (code, output) == (0, f"paused {ANA}\n")
    [held] = pauses(project, "leads")
    assert (held["reason"], held["by"], held["until"]) == ("on holiday", "cli", until.isoformat())
    paused_at = datetime.fromisoformat(held["at"])
    moved = due(project)
    # a pause with an end moves the remaining steps at once by its length
    for step in ("tips", "later"):
        assert moved[step] - before[step] == until - paused_at
    assert run("lead", "show", ANA)[1].count('"paused": true') == 1

    assert run("lead", "resume", ANA) == (0, f"resumed {ANA}\n")
    assert pauses(project, "leads") == [None]
    actions = [a for (a,) in rows(project, "SELECT action FROM timeline ORDER BY id")]
    assert actions[-1] == "resume"
    assert "pause" in actions


def test_lead_pause_refuses_a_bad_until_and_writes_nothing(project: Path) -> None:
    before = due(project)
    code, output = run("lead", "pause", ANA, "--until", "next tuesday")
    assert code == 1
    assert "--until 'next tuesday'" in output
    code, output = run("lead", "pause", ANA, "--until", "2026-12-01T09:00:00")
    assert (code, output) == (1, "--until needs a time zone offset, like 2026-12-01T09:00:00Z\n")
    assert pauses(project, "leads") == [None]
    assert due(project) == before


def test_lead_pause_of_one_sequence_holds_only_that_enrollment(project: Path) -> None:
    code, output = run("lead", "pause", ANA, "--sequence", "welcome")
    assert (code, output) == (0, f"paused {ANA} in welcome\n")
    assert pauses(project, "leads") == [None]
    [held] = pauses(project, "enrollments")
    assert held["scope"] == "enrollment"
    assert run("lead", "resume", ANA, "--sequence", "welcome") == (0, f"resumed {ANA}\n")
    assert pauses(project, "enrollments") == [None]


def test_lead_exit_ends_the_enrollment_and_a_second_exit_says_so(project: Path) -> None:
    assert run("lead", "exit", ANA, "--sequence", "welcome", "--reason", "asked") == (
        0,
        f"{ANA} left welcome\n",
    )
    assert rows(project, "SELECT status, exit_reason FROM enrollments") == [("exited", "asked")]
    assert steps(project) == {
        "hello": ("skipped", "exited"),
        "tips": ("skipped", "exited"),
        "later": ("skipped", "exited"),
    }
    assert run("lead", "exit", ANA, "--sequence", "welcome") == (
        1,
        f"{ANA} is not enrolled in welcome\n",
    )


def test_sends_pause_and_resume_flip_the_incident_switch(project: Path) -> None:
    assert run("sends", "pause") == (
        0,
        "every send is held: `nurture sends resume` to let them go\n",
    )
    assert rows(project, "SELECT name, value, changed_by FROM switches") == [
        ("sends", "paused", "cli")
    ]
    assert run("sends", "resume") == (0, "sends resumed\n")
    assert rows(project, "SELECT name, value FROM switches") == [("sends", "running")]


def test_sequences_pause_and_resume_hold_one_sequence(project: Path) -> None:
    assert run("sequences", "pause", "welcome") == (0, "welcome: paused\n")
    assert rows(project, "SELECT name, value, changed_by FROM switches") == [
        ("sequence:welcome", "paused", "cli")
    ]
    assert run("sequences", "resume", "welcome") == (0, "welcome: running\n")
    assert rows(project, "SELECT name, value FROM switches") == [("sequence:welcome", "running")]


def test_sequences_reload_moves_enrollments_in_flight_to_the_edited_file(project: Path) -> None:
    before = due(project)
    (project / "sequences" / "welcome.yaml").write_text(EDITED)
    code, output = run("sequences", "reload")
    assert code == 0, output
    assert output == (
        "welcome: retimed 1, skipped 0, removed 1, added 1\nok: 1 sequence(s) loaded\n"
    )
    assert steps(project) == {
        "hello": ("pending", None),
        "tips": ("pending", None),
        "later": ("skipped", "removed"),
        "extra": ("pending", None),
    }
    assert due(project)["tips"] - before["tips"] == timedelta(days=1)


def test_sequences_reload_of_a_broken_file_changes_nothing(project: Path) -> None:
    before = steps(project), due(project)
    (project / "sequences" / "welcome.yaml").write_text(EDITED.replace("day: 4", "dya: 4"))
    code, output = run("sequences", "reload")
    assert code == 1
    assert "welcome.yaml:6:" in output
    assert output.endswith("problem(s) in the sequence files: fix them first\n")
    assert (steps(project), due(project)) == before


def test_sequences_retire_ends_a_removed_sequences_enrollments(project: Path) -> None:
    code, output = run("sequences", "retire", "welcome")
    assert (code, output) == (1, "welcome is still in sequences/: remove its file first\n")
    assert rows(project, "SELECT status FROM enrollments") == [("active",)]

    (project / "sequences" / "welcome.yaml").unlink()
    (project / "sequences" / "other.yaml").write_text(WELCOME.replace("signed_up", "joined"))
    code, output = run("sequences", "reload")
    assert code == 0, output
    assert "welcome: file removed; its enrollments are held until it returns" in output
    assert rows(project, "SELECT status FROM enrollments") == [("active",)]

    assert run("sequences", "retire", "welcome") == (0, "welcome: 1 lead(s) retired\n")
    assert rows(project, "SELECT status, exit_reason FROM enrollments") == [("exited", "retired")]
    assert {status for status, _ in steps(project).values()} == {"skipped"}
