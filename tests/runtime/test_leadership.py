"""The beat lease on SQLite and PostgreSQL: one holder at a time; a leader that stops renewing
has stopped trusting its lease before another beat can take it; a clean stop hands it over at
once; settings that would renew too rarely are refused by name."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine

from worker.config import Settings
from worker.runtime.leadership import Leadership
from worker.store.db import make_engine
from worker.store.migrate import upgrade

pytestmark = pytest.mark.integration


@pytest.fixture
def database(database_url: str) -> Engine:
    upgrade(database_url)
    return make_engine(database_url)


def beat(database: Engine, name: str, lease: float = 0.6) -> Leadership:
    return Leadership(database, lease=lease, renew=lease / 5, holder=name)


def test_one_beat_leads_and_the_other_stands_by(database: Engine) -> None:
    a, b = beat(database, "a"), beat(database, "b")
    a.keep()
    b.keep()
    assert (a.leading, b.leading) == (True, False)
    for _ in range(5):  # the leader renewing in time keeps the lease
        time.sleep(a.renew)
        a.keep()
        b.keep()
        assert (a.leading, b.leading) == (True, False)


def test_a_silent_leader_stops_trusting_its_lease_before_another_can_take_it(
    database: Engine,
) -> None:
    a, b = beat(database, "a"), beat(database, "b")
    a.keep()
    assert a.leading
    deadline = time.monotonic() + 10
    while not b.leading:  # a no longer renews (stuck, or cut off from the database)
        assert time.monotonic() < deadline, "b never took the lease over"
        b.keep()
        if b.leading:
            assert not a.leading, "two beats trusted the lease at the same time"
        time.sleep(0.02)
    assert not a.may_publish()  # a wakes up: its renewal fails, it stays quiet
    assert b.may_publish()
    assert a.term == b.term == 1


def test_a_beat_that_stops_cleanly_hands_the_lease_over_at_once(database: Engine) -> None:
    a = beat(database, "a", lease=30)
    b = Leadership(database, lease=30, renew=0.01, holder="b")
    a.keep()
    b.keep()
    assert not b.leading
    a.release()
    assert not a.leading
    time.sleep(0.02)  # b's next attempt, long before a's 30 s lease would have run out
    b.keep()
    assert b.leading


def test_renewing_less_than_twice_a_lease_is_refused() -> None:
    with pytest.raises(ValidationError, match="NURTURE_BEAT_RENEW_SECONDS"):
        Settings(beat_lease_seconds=4, beat_renew_seconds=3)
