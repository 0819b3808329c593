"""The outcome counters against an independent recount from the raw rows, on SQLite and
PostgreSQL, after real sends, opens, clicks, a reply, an unsubscribe, render failures, skips and
a conversion (the scenario of test_operator.py); the compaction keeps the sums; the backfill
on a database whose counters are gone gives the same sums; a date range narrows them."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.stats.test_operator import rows
from worker.runtime.process import Runtime
from worker.stats.service import counted
from worker.stats.upkeep import backfill, compact
from worker.store.db import transaction

pytestmark = pytest.mark.integration

Totals = Counter[tuple[str, str, str]]
"""(step, outcome, reason) → count; step "" for the enrollments."""

RUNS = """
SELECT step_id, status, coalesce(reason, ''), count(*) FROM step_runs
WHERE sequence_id = 'trial' AND enrollment_id IS NOT NULL GROUP BY step_id, status, reason
"""
DELIVERED = """
SELECT r.step_id, count(DISTINCT r.id) FROM step_runs r JOIN messages m ON m.step_run_id = r.id
WHERE r.sequence_id = 'trial' AND r.status = 'sent' AND (
  (m.channel IN ('sms', 'whatsapp') AND m.status IN ('delivered', 'read'))
  OR (m.channel NOT IN ('sms', 'whatsapp')
      AND m.status NOT IN ('bounced', 'failed', 'undelivered', 'complained')))
GROUP BY r.step_id
"""
ENROLLMENTS = "SELECT status, count(*) FROM enrollments WHERE sequence_id = 'trial' GROUP BY status"
EVENTS = "SELECT type, lead_id, occurred_at, properties FROM events WHERE type IN ({})"
SENT = """
SELECT id, lead_id, step_id, channel, sent_at, enrollment_id FROM step_runs
WHERE sequence_id = 'trial' AND status = 'sent'
"""
GOAL = """
SELECT DISTINCT e.id FROM enrollments e JOIN events v ON v.lead_id = e.lead_id
WHERE e.sequence_id = 'trial' AND v.type = 'subscription_upgraded'
"""


def _json(value: Any) -> dict[str, Any]:
    import json

    return value if isinstance(value, dict) else dict(json.loads(value))


def recount(runtime: Runtime) -> Totals:
    """The trial's outcomes, counted from the raw rows with SQL of this test's own."""
    found: Totals = Counter()
    for step, status, reason, n in rows(runtime, RUNS):
        found[(step, "scheduled", "")] += n
        if status in ("sent", "failed", "skipped"):
            found[(step, status, "" if status == "sent" else reason)] += n
    for step, n in rows(runtime, DELIVERED):
        found[(step, "delivered", "")] += n
    for status, n in rows(runtime, ENROLLMENTS):
        found[("", "entered", "")] += n
        if status in ("completed", "exited"):
            found[("", status, "")] += n
    sent = rows(runtime, SENT)
    step_of = {run[0]: run[2] for run in sent}
    outcome = {"email_opened": "opened", "email_clicked": "clicked",
               "replied": "replied", "unsubscribed": "unsubscribed"}  # fmt: skip
    counted_runs: set[tuple[str, str]] = set()
    kinds = ", ".join(f"'{k}'" for k in outcome)
    for kind, lead_id, _at, properties in rows(runtime, EVENTS.format(kinds)):
        run = _json(properties).get("step_run")
        if run is None:  # last touch: the lead's last message sent (all here were before)
            mine = sorted((r for r in sent if r[1] == lead_id), key=lambda r: str(r[4]))
            run = mine[-1][0] if mine else None
        if run in step_of:
            counted_runs.add((outcome[kind], str(run)))
    for name, run in counted_runs:
        found[(step_of[run], name, "")] += 1
    converted = {enrollment for (enrollment,) in rows(runtime, GOAL)}
    found[("", "converted", "")] += len(converted)
    for run in sent:
        if run[5] in converted:
            found[(run[2], "converted", "")] += 1
    return +found


def from_counters(
    runtime: Runtime, start: datetime | None = None, end: datetime | None = None
) -> Totals:
    """The same totals as the counters give them (waiting now left out: it is read live)."""
    data = counted(runtime, "trial", start=start, end=end)
    found: Totals = Counter()
    for name, n in data["enrollments"].items():
        found[("", name, "")] += n
    for line in data["steps"]:
        for name in ("scheduled", "sent", "delivered", "opened", "clicked", "replied",
                     "unsubscribed", "converted"):  # fmt: skip
            found[(line["step"], name, "")] += line[name]
        for name in ("failed", "skipped"):
            for reason, n in line[name].items():
                found[(line["step"], name, reason)] += n
    return +found


def test_counters_equal_a_recount_from_the_raw_rows(
    runtime: Runtime,
    scenario: dict[str, str],
) -> None:
    expected = recount(runtime)
    assert expected[("welcome", "sent", "")] == 3
    assert expected[("", "converted", "")] == 1
    assert from_counters(runtime) == expected


def test_compaction_keeps_the_sums(
    runtime: Runtime,
    scenario: dict[str, str],
) -> None:
    before = from_counters(runtime)
    [(loose,)] = rows(runtime, "SELECT count(*) FROM outcome_counters")
    later = datetime.now(UTC) + timedelta(hours=2)
    assert compact(runtime, later) >= 1
    [(folded,)] = rows(runtime, "SELECT count(*) FROM outcome_counters")
    assert folded < loose
    assert from_counters(runtime) == before
    assert compact(runtime, later) == 0  # nothing new to fold
    assert from_counters(runtime) == before


def test_backfill_rebuilds_the_same_sums_and_twice_is_once(
    runtime: Runtime,
    scenario: dict[str, str],
) -> None:
    before = from_counters(runtime)
    with transaction(runtime.database) as session:  # as before the counters existed
        from sqlalchemy import text

        session.execute(text("DELETE FROM outcome_counters"))
        session.execute(text("DELETE FROM outcome_marks"))
    assert from_counters(runtime) == Counter()
    backfill(runtime)
    assert from_counters(runtime) == before == recount(runtime)
    backfill(runtime)
    assert from_counters(runtime) == before


def test_a_date_range_narrows_the_counts(
    runtime: Runtime,
    client: TestClient,
    scenario: dict[str, str],
) -> None:
    now = datetime.now(UTC)
    everything = from_counters(runtime)
    assert from_counters(runtime, now - timedelta(hours=2), now + timedelta(hours=2)) == everything
    assert from_counters(runtime, now - timedelta(days=2), now - timedelta(days=1)) == Counter()
    assert from_counters(runtime, now + timedelta(hours=2)) == Counter()
    from worker.stats.counts import BadRange

    with pytest.raises(BadRange, match="must come after"):
        counted(runtime, "trial", start=now, end=now - timedelta(days=1))
