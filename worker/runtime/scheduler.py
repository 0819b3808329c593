"""The Celery beat scheduler of Nurture: any number of `nurture beat` may run, and only the
one holding the `beat` lease (runtime/leadership.py) publishes the periodic duties; the others
stand by and take over within a lease (10 s) of the leader's death.

The schedule lives in memory, not in a file each beat would keep for itself: when the last
publication of a long duty (the prunes, the Twilio confirmation) matters, it is kept in the
database (`beat_entries`), so a new leader goes on from where the old one was.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import kombu
from celery import Celery
from celery.beat import ScheduleEntry, Scheduler
from sqlalchemy.exc import SQLAlchemyError

from worker.config import settings
from worker.kit.clock import utcnow
from worker.runtime.leadership import Leadership
from worker.store.db import database_url, make_engine, transaction
from worker.store.leases import last_runs, record_run

log = logging.getLogger("nurture.beat")
REMEMBERED = 60.0
"""Duties at least this many seconds apart have their last publication kept in the database;
the ones every few seconds simply go out at once after a takeover."""


class LeaderScheduler(Scheduler):
    """Publishes due entries only while this process holds the beat lease."""

    def __init__(self, app: Celery, *args: Any, **kwargs: Any) -> None:
        config = settings()
        self.leadership = Leadership(
            # an engine of its own: `nurture run` starts beat in a child process, where the
            # parent's pooled connections (their files closed by Celery) must not be reused
            make_engine(database_url(config)),
            lease=config.beat_lease_seconds,
            renew=config.beat_renew_seconds,
        )
        self._term = 0
        super().__init__(app, *args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """One turn of beat's loop: keep or seek the lease, then (leading) publish at most one
        due entry; the seconds to sleep, never past the next renewal."""
        wait = self.leadership.keep()
        if not self.leadership.leading:
            return max(wait, 0.05)
        if self._term != self.leadership.term:
            self._term = self.leadership.term
            self._resume()
        return max(0.0, min(float(super().tick(*args, **kwargs)), wait))

    def apply_entry(self, entry: ScheduleEntry, producer: kombu.Producer | None = None) -> None:
        if not self.leadership.may_publish():
            log.info("beat %s: not leading, %s not published", self.leadership.holder, entry.name)
            return
        super().apply_entry(entry, producer=producer)
        if entry.name and _interval(entry) >= REMEMBERED:
            self._remember(entry.name, utcnow())

    def close(self) -> None:
        self.leadership.release()
        super().close()

    def _resume(self) -> None:
        """Just became the leader: long duties continue from their last publication by any
        beat (the heap is rebuilt from the entries at the next tick)."""
        try:
            with transaction(self.leadership.database) as session:
                found = last_runs(session)
        except SQLAlchemyError as exc:
            log.warning("beat: last publications not read (%s): long duties start afresh", exc)
            return
        for name, entry in self.schedule.items():
            at: datetime | None = found.get(name)
            if at is not None:
                entry.last_run_at = at
        self._heap = None

    def _remember(self, name: str, at: datetime) -> None:
        try:
            with transaction(self.leadership.database) as session:
                record_run(session, name, at)
        except SQLAlchemyError as exc:  # the duty went out; only its rhythm after a takeover
            log.warning("beat: publication of %s not recorded: %s", name, exc)


def _interval(entry: ScheduleEntry) -> float:
    every = getattr(entry.schedule, "run_every", None)
    return every.total_seconds() if every is not None else 0.0
