"""What time alone does to leads: pauses end, scores decay across a line, quiet spells begin.
The engine says when each lead next needs a look (`wake_at`); this wakes the ones due.

The work adapts to the load: chunks of leads, each locked, loaded and written back in one
transaction (three queries load every world of a chunk), one after the other while leads are
due and the tick's time lasts. A chunk that fails is tried again one lead at a time, so one
broken lead cannot hold the others back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from worker.engine.core import Engine
from worker.engine.state import Outcome
from worker.kit.errors import NotFound
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.leads import lock_leads_to_wake
from worker.store.worlds import Loaded, load_worlds
from worker.world.unit import act_locked, finish

log = logging.getLogger("nurture")

CHUNK = 100
"""Leads per transaction: their row locks are held for a fraction of a second."""
SECONDS = 20.0
"""How long one tick keeps going while leads are due (beat starts one every 30 s)."""


@dataclass
class Woken:
    """What one tick did."""

    leads: int = 0
    chunks: int = 0
    more_due: bool = False
    """It stopped for time with leads still due: the next tick goes on from there."""
    failed: set[str] = field(default_factory=set)
    """Leads whose tick raised (logged with the traceback); tried again next tick."""

    def summary(self) -> str:
        text = f"woke {self.leads} lead(s) in {self.chunks} chunk(s)"
        if self.failed:
            text += f", {len(self.failed)} failed"
        return text + (", more due" if self.more_due else "")


def wake_due_leads(
    runtime: Runtime,
    now: datetime,
    *,
    chunk: int = CHUNK,
    seconds: float = SECONDS,
    timer: Callable[[], float] = time.monotonic,
) -> Woken:
    """Tick every lead whose wake time is at or before `now`, in chunks of `chunk`, for at
    most about `seconds` (a chunk once started finishes)."""
    deadline = timer() + seconds
    woken = Woken()
    while True:
        listed, ticked = _tick_chunk(runtime, now, chunk, woken.failed)
        woken.leads += ticked
        woken.chunks += 1
        if listed < chunk:  # nothing more is due (failed leads are left out of the query)
            return woken
        if timer() >= deadline:
            woken.more_due = True
            return woken


def _tick_chunk(runtime: Runtime, now: datetime, chunk: int, failed: set[str]) -> tuple[int, int]:
    """Lock, tick and write back up to `chunk` due leads in one transaction: how many were
    listed and how many ticked (a failed chunk is done again lead by lead)."""
    engine = runtime.engine
    ids: list[str] = []
    try:
        with transaction(runtime.database) as session:
            rows = lock_leads_to_wake(session, now, chunk, excluding=failed)
            ids = [row.id for row in rows]
            worlds = load_worlds(session, rows, now)
            for row in rows:
                loaded = worlds[row.id]
                finish(session, engine, loaded, engine.tick(loaded.world, now), now)
    except SQLAlchemyError:
        raise  # the database is down or contended: the next tick starts again
    except Exception:
        log.warning("leads.tick: a chunk of %d lead(s) failed; ticking them one by one", len(ids))
        return len(ids), _tick_alone(runtime, now, ids, failed)
    return len(ids), len(ids)


def _tick(engine: Engine, loaded: Loaded, now: datetime) -> Outcome:
    return engine.tick(loaded.world, now)


def _tick_alone(runtime: Runtime, now: datetime, ids: list[str], failed: set[str]) -> int:
    done = 0
    for lead_id in ids:
        try:
            with transaction(runtime.database) as session:
                act_locked(session, runtime.engine, lead_id, _tick, now)
        except NotFound:  # erased since it was listed
            continue
        except SQLAlchemyError:
            raise
        except Exception:
            log.exception("leads.tick: lead %s could not be ticked", lead_id)
            failed.add(lead_id)
            continue
        done += 1
    return done
