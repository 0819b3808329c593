"""Benchmark: what retention takes off the disk, and what the kept idempotency keys cost.

One PostgreSQL database seeded by COPY: `--events` events that arrived evenly over the last
`--days` days (`--keyed` of them with an idempotency key, as events posted with an `id` and
vendor webhooks are), and `--crm` CRM outbox rows over the same days (`--pushed` of them pushed,
the rest pending). Then `prune_expired` (what the hourly `retention.prune` task runs) with
event and CRM retention `--keep` days and idempotency retention `--keys-keep` days, until
nothing is left to prune.

- **Measure**: `pg_total_relation_size` (heap, indexes, TOAST) of `events`, `event_keys` and
  `crm_outbox` before, after the prune and a plain VACUUM (what autovacuum does: the space is
  reused by new rows, the files keep their size), and after VACUUM FULL (the files rewritten:
  what the kept rows take); rows deleted per second by the prune.
- **Also**: the key table's size per million keys, beside the events table's per million
  events; the BRIN index on `events.received_at` (the prune's way in) against the table.

    .venv/bin/python bench/retention.py                   # 1,000,000 events, ~2 min
    .venv/bin/python bench/retention.py --events 200000   # a quick look

Not part of the test run. Needs the PostgreSQL binaries (scripts/install-test-servers).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from _data import bench_runtime, libpq_url, write_project
from _servers import run_main, wide_console
from rich.table import Table

from tests.helpers import fresh_database
from tests.servers.databases import postgres
from worker.store.migrate import upgrade
from worker.support.retention import prune_expired

TABLES = ("events", "event_keys", "crm_outbox")
TYPES = ("page_viewed", "email_sent", "email_opened", "email_clicked", "form_submitted")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--crm", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=90, help="the seeded history, in days")
    parser.add_argument("--keep", type=int, default=30, help="event and CRM retention, days")
    parser.add_argument("--keys-keep", type=int, default=60, help="idempotency retention")
    parser.add_argument("--keyed", type=float, default=0.5, help="share of events with a key")
    parser.add_argument("--pushed", type=float, default=0.95, help="share of CRM rows pushed")
    return parser.parse_args()


def main() -> int:
    args = arguments()
    with postgres() as server, tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        database_url = fresh_database(server)
        upgrade(database_url)
        write_project(folder)
        now = datetime.now(UTC)
        started = time.monotonic()
        seed(database_url, args, now)
        seeded = time.monotonic() - started
        sizes = {"seeded": measure(database_url)}
        runtime = bench_runtime(folder, database_url)
        runtime.config = runtime.config.model_copy(
            update={
                "event_retention_days": args.keep,
                "crm_outbox_retention_days": args.keep,
                "idempotency_retention_days": args.keys_keep,
            }
        )
        started = time.monotonic()
        pruned = prune_expired(runtime, now, seconds=3600)
        took = time.monotonic() - started
        runtime.database.dispose()
        vacuum(database_url, "VACUUM ANALYZE")
        sizes["pruned + VACUUM"] = measure(database_url)
        vacuum(database_url, "VACUUM FULL ANALYZE")
        sizes["VACUUM FULL"] = measure(database_url)
        report(args, sizes, pruned.summary(), pruned.events + pruned.crm_changes, took, seeded)
        brin = size_of(database_url, "pg_relation_size('ix_events_received_brin')")
        wide_console().print(f"BRIN index on events.received_at: {brin / 1024:.0f} kB")
    return 0


def seed(database_url: str, args: argparse.Namespace, now: datetime) -> None:
    """COPY the events and the CRM outbox, oldest first (as they would have arrived)."""
    spread = timedelta(days=args.days).total_seconds()
    leads = [uuid.uuid4().hex for _ in range(max(1, args.events // 20))]
    shuffle = random.Random(7)
    with psycopg.connect(libpq_url(database_url)) as connection, connection.cursor() as cursor:
        columns = "id, idempotency_key, lead_id, type, occurred_at, received_at, properties, source"
        with cursor.copy(f"COPY events ({columns}) FROM STDIN") as copy:
            for number in range(args.events):
                at = now - timedelta(seconds=spread * (1 - number / args.events))
                key = f"evt_{uuid.uuid4().hex}" if shuffle.random() < args.keyed else None
                properties = {"path": f"/pricing/{number % 50}", "step_run": uuid.uuid4().hex}
                copy.write_row([uuid.uuid4().hex, key, shuffle.choice(leads),
                                TYPES[number % len(TYPES)], at, at, json.dumps(properties),
                                "api"])  # fmt: skip
        columns = "lead_id, kind, payload, created_at, pushed_at, attempts, status, delivery_id"
        with cursor.copy(f"COPY crm_outbox ({columns}) FROM STDIN") as copy:
            for number in range(args.crm):
                at = now - timedelta(seconds=spread * (1 - number / args.crm))
                pushed = shuffle.random() < args.pushed
                payload = {"email": f"lead{number}@example.com", "lifecyclestage": "lead"}
                copy.write_row([shuffle.choice(leads), "contact", json.dumps(payload), at,
                                at if pushed else None, 1 if pushed else 0,
                                "pushed" if pushed else "pending",
                                f"crm-{number}" if pushed else None])  # fmt: skip
        connection.commit()
    vacuum(database_url, "VACUUM ANALYZE")


def vacuum(database_url: str, statement: str) -> None:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        connection.execute(statement)


def size_of(database_url: str, expression: str) -> int:
    with psycopg.connect(libpq_url(database_url)) as connection:
        found = connection.execute(f"SELECT {expression}").fetchone()
    return int(found[0]) if found else 0


def measure(database_url: str) -> dict[str, tuple[int, int]]:
    """Table → (rows, bytes with indexes and TOAST)."""
    found: dict[str, tuple[int, int]] = {}
    with psycopg.connect(libpq_url(database_url)) as connection:
        for name in TABLES:
            row: Any = connection.execute(
                f"SELECT count(*), pg_total_relation_size('{name}') FROM {name}"
            ).fetchone()
            found[name] = (int(row[0]), int(row[1]))
    return found


def report(
    args: argparse.Namespace,
    sizes: dict[str, dict[str, tuple[int, int]]],
    summary: str,
    deleted: int,
    took: float,
    seeded: float,
) -> None:
    console = wide_console()
    table = Table(
        title=f"retention: {args.events:,} events and {args.crm:,} CRM rows over {args.days} "
        f"days, {args.keep} days kept, keys {args.keys_keep} days"
    )
    table.add_column("table")
    for stage in sizes:
        table.add_column(f"{stage}: rows", justify="right")
        table.add_column("MB", justify="right")
    for name in TABLES:
        cells = []
        for measured in sizes.values():
            rows, size = measured[name]
            cells += [f"{rows:,}", f"{size / 2**20:.1f}"]
        table.add_row(name, *cells)
    console.print(table)
    console.print(f"seeded in {seeded:.0f} s; prune: {summary} in {took:.1f} s "
                  f"({deleted / took:,.0f} rows/s)")  # fmt: skip
    keys, key_bytes = sizes["VACUUM FULL"]["event_keys"]
    events, event_bytes = sizes["seeded"]["events"]
    if keys:
        console.print(
            f"event_keys: {key_bytes / keys * 1e6 / 2**20:.0f} MB per million keys "
            f"(events: {event_bytes / events * 1e6 / 2**20:.0f} MB per million events)"
        )


if __name__ == "__main__":
    run_main(main)
