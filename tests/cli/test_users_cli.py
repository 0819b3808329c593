"""`nurture users …` as an admin runs them: Typer's runner against a real SQLite database,
the password on standard input (as a script gives it) or prompted twice without echo,
asserting what they print, their exit codes and the rows they leave."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from worker.accounts.roles import Role
from worker.accounts.users import find_user, list_users, verify
from worker.cli.main import app
from worker.config import settings
from worker.store.db import engine_for
from worker.store.migrate import upgrade

PASSWORD = "correct horse battery"


@pytest.fixture
def database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'nurture.db'}"
    monkeypatch.setenv("NURTURE_DATABASE_URL", url)
    monkeypatch.setenv("NURTURE_HOME", str(tmp_path / ".nurture"))
    settings.cache_clear()
    upgrade(url)
    try:
        yield url
    finally:
        settings.cache_clear()


def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), input=stdin)
    return result.exit_code, result.output


def people(url: str) -> list[tuple[str, str, bool]]:
    return [(u.name, u.role.value, u.must_change_password) for u in list_users(engine_for(url))]


def test_add_reads_the_password_from_stdin_and_list_shows_the_people(database_url: str) -> None:
    assert run("users", "add", "Ada", "--role", "admin", stdin=PASSWORD + "\n") == (
        0,
        "added ada (admin)\n",
    )
    assert run("users", "add", "vera", "--role", "viewer", stdin=PASSWORD) == (
        0,
        "added vera (viewer)\n",
    )
    assert people(database_url) == [("ada", "admin", False), ("vera", "viewer", False)]
    assert verify(engine_for(database_url), "ada", PASSWORD) is not None
    code, output = run("users", "list")
    assert code == 0
    lines = [line for line in output.splitlines() if "ada" in line or "vera" in line]
    assert len(lines) == 2
    assert "admin" in lines[0]
    assert "viewer" in lines[1]
    assert "name" in output
    assert "role" in output
    assert "created" in output
    assert "last password change" in output
    assert PASSWORD not in output


def test_add_at_a_terminal_prompts_twice_without_echo(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[str, bool, bool]] = []

    def prompt(text: str, *, hide_input: bool, confirmation_prompt: bool) -> str:
        asked.append((text, hide_input, confirmation_prompt))
        return PASSWORD

    monkeypatch.setattr("worker.cli.users.interactive", lambda: True)
    monkeypatch.setattr("typer.prompt", prompt)
    assert run("users", "add", "sam", "--role", "support")[0] == 0
    assert asked == [("Password", True, True)]
    assert people(database_url) == [("sam", "support", False)]


def test_bad_input_is_refused_with_a_clear_message_and_nothing_is_added(
    database_url: str,
) -> None:
    code, output = run("users", "add", "ana ito", "--role", "admin", stdin=PASSWORD)
    assert (code, output) == (
        1,
        "name: use 1 to 64 letters, digits, dots, underscores or hyphens, like ana.ito\n",
    )
    code, output = run("users", "add", "ana", "--role", "admin", stdin="short\n")
    assert (code, output) == (1, "password: the password must be at least 10 characters long\n")
    code, output = run("users", "add", "ana", "--role", "admin", stdin="")
    assert (code, output) == (1, "no password on standard input: give it as one line\n")
    code, output = run("users", "add", "ana", "--role", "boss", stdin=PASSWORD)
    assert code == 2  # a usage error, from the command line itself
    assert "boss" in output
    assert people(database_url) == []
    assert run("users", "add", "ana", "--role", "admin", stdin=PASSWORD)[0] == 0
    code, output = run("users", "add", "ANA", "--role", "viewer", stdin=PASSWORD)
    assert (code, output) == (1, "a user named ana exists already\n")
    assert people(database_url) == [("ana", "admin", False)]


def test_remove_and_set_role_keep_an_admin(database_url: str) -> None:
    run("users", "add", "ada", "--role", "admin", stdin=PASSWORD)
    run("users", "add", "sam", "--role", "support", stdin=PASSWORD)
    last = "ada is the last admin: make another user admin first\n"
    assert run("users", "remove", "ada") == (1, last)
    assert run("users", "set-role", "ada", "viewer") == (1, last)
    assert run("users", "set-role", "sam", "admin") == (0, "sam is now admin\n")
    assert run("users", "set-role", "ada", "Viewer") == (0, "ada is now viewer\n")
    assert run("users", "remove", "ada") == (0, "removed ada\n")
    assert run("users", "remove", "ada") == (1, "no user named ada\n")
    assert run("users", "set-role", "nobody", "admin") == (1, "no user named nobody\n")
    assert people(database_url) == [("sam", "admin", False)]


def test_set_password_resets_and_asks_for_a_new_one_at_the_next_sign_in(
    database_url: str,
) -> None:
    run("users", "add", "sam", "--role", "support", stdin=PASSWORD)
    before = find_user(engine_for(database_url), "sam")
    assert before is not None
    assert run("users", "set-password", "sam", stdin="a temporary password\n") == (
        0,
        "password of sam changed; a new one is asked for at the next sign-in\n",
    )
    after = find_user(engine_for(database_url), "sam")
    assert after is not None
    assert after.must_change_password
    assert after.session_version == before.session_version + 1  # open sessions end
    assert verify(engine_for(database_url), "sam", PASSWORD) is None
    assert run(
        "users", "set-password", "sam", "--no-change-required", stdin="a permanent password\n"
    ) == (0, "password of sam changed\n")
    assert people(database_url) == [("sam", "support", False)]
    assert run("users", "set-password", "nobody", stdin=PASSWORD) == (1, "no user named nobody\n")
    code, output = run("users", "set-password", "sam", stdin="tiny\n")
    assert (code, output) == (1, "password: the password must be at least 10 characters long\n")
    assert verify(engine_for(database_url), "sam", "a permanent password") is not None


def test_the_commands_say_when_the_database_is_not_migrated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NURTURE_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    settings.cache_clear()
    try:
        assert run("users", "list") == (
            1,
            "the database has no users table yet: run `nurture db upgrade` first\n",
        )
    finally:
        settings.cache_clear()


def test_a_role_is_one_of_four() -> None:
    assert [role.value for role in Role] == ["viewer", "support", "marketer", "admin"]
