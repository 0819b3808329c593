"""The beat lease on SQLite and PostgreSQL: one holder at a time; a leader that stops renewing
has stopped trusting its lease before another beat can take it; a clean stop hands it over at
once; a new leader keeps the rhythm of the long duties; settings that would renew too rarely
are refused by name."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from celery.beat import Scheduler
from pydantic import ValidationError
from sqlalchemy import Engine

from worker.config import Settings, settings
from worker.runtime.leadership import Leadership
from worker.runtime.scheduler import LeaderScheduler
from worker.store.db import make_engine, transaction
from worker.store.leases import record_run
from worker.store.migrate import upgrade
from worker.tasks import make_app

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


def test_a_new_leader_goes_on_with_the_long_duties_from_their_last_publication(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrade(database_url)
    five_hours_ago = datetime.now(UTC) - timedelta(hours=5)
    with transaction(make_engine(database_url)) as session:
        record_run(session, "prune", five_hours_ago)  # by a beat that has died since
    monkeypatch.setenv("NURTURE_DATABASE_URL", database_url)
    monkeypatch.setenv("NURTURE_HOME", str(tmp_path / ".nurture"))
    settings.cache_clear()
    try:
        scheduler = LeaderScheduler(make_app(settings()))
        published: list[str] = []
        monkeypatch.setattr(Scheduler, "apply_entry", lambda _s, entry, producer=None:
                            published.append(entry.name))  # fmt: skip
        deadline = time.monotonic() + 10
        while "dispatch" not in published and time.monotonic() < deadline:
            time.sleep(min(scheduler.tick(), 0.05))  # beat's own loop, a little faster
        assert scheduler.leadership.leading
        assert "dispatch" in published  # the short duties at once
        assert "prune" not in published  # the six-hourly one an hour from now, not at once
        assert scheduler.schedule["prune"].last_run_at == five_hours_ago
        due, wait = scheduler.schedule["prune"].is_due()
        assert not due
        assert timedelta(minutes=55) < timedelta(seconds=wait) <= timedelta(hours=1)
        scheduler.close()
        assert not scheduler.leadership.leading
    finally:
        settings.cache_clear()
