"""Keeping the outcome counters: the compaction a beat runs (each closed hour's delta rows folded
into one row per key) and the one-off backfill from the history stored before the counters
existed (`nurture stats backfill`, docs/stats.md)."""

from __future__ import annotations

from datetime import datetime, timedelta

from worker.runtime.process import Runtime
from worker.store import counter_reads
from worker.store.counter_rebuild import Goal, Rebuilt, rebuild
from worker.store.db import transaction


def compact(runtime: Runtime, now: datetime) -> int:
    """Fold the closed hours with new delta rows; how many hours."""
    with transaction(runtime.database) as session:
        return counter_reads.compact(session, now)


def backfill(runtime: Runtime) -> Rebuilt:
    """Rebuild the counters from the stored rows (conversions by the goals of the sequence
    files loaded now). Idempotent: it replaces, it never adds."""
    goals = {}
    for sequence_id, definition in runtime.catalog.sequences.items():
        goal = definition.model.goal
        if goal is not None:
            seconds = goal.within.approximate().total_seconds()
            goals[sequence_id] = Goal(goal.event, timedelta(seconds=seconds))
    with transaction(runtime.database) as session:
        return rebuild(session, goals)
