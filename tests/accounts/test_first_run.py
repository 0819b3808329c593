"""The first start of `nurture run` on a fresh folder makes the console's `admin` with a
one-time password for the command to print (once: a second start makes nothing), while the
production `nurture api` makes nobody and says how to add somebody."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import write_project
from tests.library import TRIAL, unsubscribe_template
from worker.accounts.users import list_users, verify
from worker.config import settings
from worker.processes import NO_USERS, console_users_missing, prepare_local
from worker.store.db import database_url, engine_for
from worker.store.migrate import upgrade

pytestmark = pytest.mark.integration


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    write_project(
        tmp_path,
        {"sequences/trial.yaml": TRIAL, "templates/t/welcome.html.j2": unsubscribe_template("Hi")},
    )
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "HOME", "API_TOKENS", "PUBLIC_URL", "SECRET_KEY"):
        monkeypatch.delenv(f"NURTURE_{name}", raising=False)
    monkeypatch.setenv("NURTURE_PUBLIC_URL", "http://127.0.0.1:8123")
    settings.cache_clear()
    try:
        yield tmp_path
    finally:
        settings.cache_clear()


def test_the_first_run_makes_an_admin_with_a_one_time_password_and_the_second_does_not(
    folder: Path,
) -> None:
    first = prepare_local(8123)
    assert first.token is not None
    assert first.admin_password is not None
    database = engine_for(database_url(first.config))
    admin = verify(database, "admin", first.admin_password)
    assert admin is not None
    assert (admin.role.value, admin.must_change_password) == ("admin", True)
    again = prepare_local(8123)
    assert again.admin_password is None
    assert [u.name for u in list_users(database)] == ["admin"]


def test_the_production_api_says_when_nobody_can_sign_in(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{folder / 'prod.db'}"
    monkeypatch.setenv("NURTURE_DATABASE_URL", url)
    settings.cache_clear()
    assert console_users_missing(settings()) is None  # not migrated yet: nothing to say
    upgrade(url)
    assert console_users_missing(settings()) == NO_USERS
    assert "nurture users add NAME --role admin" in NO_USERS
    assert list_users(engine_for(url)) == []  # nobody was made
