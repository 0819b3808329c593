"""Signing in as a service: the slow-down counted in the database (so every process agrees),
growing with each further failure; session cookies that expire, cannot be forged and end with
a new password; the audit log newest first."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine

from worker.accounts import sessions, throttle
from worker.accounts.access import SignInRefused, session_user, sign_in
from worker.accounts.audit import lead_actions, record_action
from worker.accounts.roles import Role
from worker.accounts.users import add_user, set_password
from worker.config import Settings
from worker.store.db import make_engine, transaction
from worker.store.migrate import upgrade

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def database(database_url: str) -> Engine:
    upgrade(database_url)
    found = make_engine(database_url)
    add_user(found, "ada", Role.ADMIN, PASSWORD)
    return found


@pytest.fixture
def config(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / ".nurture", secret_key=SecretStr("k" * 40))


def attempt(
    database: Engine, config: Settings, password: str, at: datetime, address: str = "10.0.0.1"
) -> str:
    try:
        sign_in(database, config, "ada", password, address, at)
    except SignInRefused as refused:
        return f"{refused.status_code} {refused}"
    return "ok"


def test_five_failures_lock_for_a_minute_and_each_one_after_doubles_the_wait(
    database: Engine, config: Settings
) -> None:
    for minute in range(4):
        at = T0 + timedelta(minutes=minute)
        assert attempt(database, config, "wrong", at) == "401 Wrong name or password"
    assert (
        attempt(database, config, "wrong", T0 + timedelta(minutes=4))
        == "401 Wrong name or password"
    )
    locked = T0 + timedelta(minutes=4, seconds=10)
    assert attempt(database, config, PASSWORD, locked) == (
        "429 Too many failed sign-ins; try again in 1 minute"
    )
    after = T0 + timedelta(minutes=5, seconds=1)
    assert attempt(database, config, "wrong", after) == "401 Wrong name or password"
    assert attempt(database, config, PASSWORD, after + timedelta(seconds=1)) == (
        "429 Too many failed sign-ins; try again in 2 minutes"
    )
    later = after + timedelta(minutes=2, seconds=1)
    assert attempt(database, config, "wrong", later) == "401 Wrong name or password"
    assert attempt(database, config, PASSWORD, later) == (
        "429 Too many failed sign-ins; try again in 4 minutes"
    )
    assert attempt(database, config, PASSWORD, later + timedelta(minutes=4, seconds=1)) == "ok"
    # a right password clears the name; a later failure starts a new spell
    assert attempt(database, config, "wrong", later + timedelta(minutes=5), "10.0.0.2") == (
        "401 Wrong name or password"
    )


def test_one_address_trying_many_names_is_slowed_down_too(
    database: Engine, config: Settings
) -> None:
    for n in range(5):
        with pytest.raises(SignInRefused):
            sign_in(database, config, f"guess{n}", PASSWORD, "203.0.113.9", T0)
    with pytest.raises(SignInRefused, match="try again in 1 minute"):
        sign_in(database, config, "ada", PASSWORD, "203.0.113.9", T0)
    assert sign_in(database, config, "ada", PASSWORD, "198.51.100.1", T0).user.name == "ada"


def test_the_spell_ends_after_fifteen_quiet_minutes(database: Engine, config: Settings) -> None:
    for minute in range(4):
        throttle.record_failure(database, "ada", None, T0 + timedelta(minutes=minute))
    throttle.record_failure(database, "ada", None, T0 + timedelta(minutes=16))
    assert throttle.locked(database, "ada", None, T0 + timedelta(minutes=16)) is None


def test_a_session_cookie_names_the_person_until_it_expires_or_is_forged(
    database: Engine, config: Settings
) -> None:
    cookie = sign_in(database, config, "ada", PASSWORD, None, T0).cookie
    found = session_user(database, config, cookie)
    assert found is not None
    assert found.name == "ada"
    # the signature's first character: all six of its bits count (the last one's low bits may
    # be base64 padding, so changing it can leave the signature as it was)
    at = cookie.rindex(".") + 1
    forged = cookie[:at] + ("A" if cookie[at] != "A" else "B") + cookie[at + 1 :]
    assert session_user(database, config, forged) is None
    assert session_user(database, config, "") is None
    old = sessions.issue(config, "ada", 1, clock=lambda: time.time() - 12 * 3600 - 5)
    assert session_user(database, config, old) is None
    recent = sessions.issue(config, "ada", 1, clock=lambda: time.time() - 11 * 3600)
    assert session_user(database, config, recent) is not None
    other = config.model_copy(update={"secret_key": SecretStr("z" * 40)})
    assert session_user(database, other, cookie) is None
    set_password(database, "ada", "a brand new password", must_change_password=False)
    assert session_user(database, config, cookie) is None


def test_the_audit_log_is_written_in_the_callers_transaction_newest_first(
    database: Engine,
) -> None:
    with transaction(database) as session:
        record_action(session, actor="user:ada", action="pause", reason="holiday",
                      lead_id="lead1", target=None, now=T0)  # fmt: skip
        record_action(session, actor="api", action="resume", reason=None, lead_id="lead1",
                      now=T0 + timedelta(days=1))  # fmt: skip
        record_action(session, actor="cli", action="hold_sends", reason="x", target="sends",
                      now=T0)  # fmt: skip

    def failing_change() -> None:
        with transaction(database) as session:
            record_action(session, actor="api", action="exit", reason=None, lead_id="lead1",
                          now=T0)  # fmt: skip
            raise RuntimeError("the change failed: its record goes with it")

    with pytest.raises(RuntimeError):
        failing_change()
    with transaction(database) as session:
        found = [(a.actor, a.action, a.reason) for a in lead_actions(session, "lead1")]
    assert found == [("api", "resume", None), ("user:ada", "pause", "holiday")]
