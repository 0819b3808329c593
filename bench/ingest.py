"""Benchmark: events per second into Nurture's API on PostgreSQL, batch and single.

A real `nurture api` (uvicorn, one process) on loopback, its PostgreSQL and the load
generator all run on this machine. Every batch holds 1,000 events: half `trial_started`
enrolling a new lead into a 4-step sequence, half `pricing_page_viewed` for leads that already
exist (seeded in a warm-up through the same endpoint; the sequence reacts to it and scoring
counts it). Then the same mix one event per request through `/v1/events`, from a few
concurrent clients.

Baselines measured in the same run:
- the floor of the writes: raw psycopg `executemany` (pipelined) writing exactly the rows
  Nurture wrote for the measured batches, table by table, one transaction per 1,000 events,
  into a second database with the same schema, plus one UPDATE per behavioural event's lead;
- the floor of HTTP: an empty FastAPI endpoint under uvicorn that parses the same bodies
  (`{"events": [...]}`) and answers 207 with one result per item.

Goal: ≥ 1,000 events/s through `/v1/events/batch`.

    .venv/bin/python bench/ingest.py                 # 20,000 events in batches of 1,000
    .venv/bin/python bench/ingest.py --quick         # 4,000 events, a quick look

Not part of the test run. Needs the PostgreSQL binaries (scripts/install-test-servers).
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from _data import libpq_url
from _servers import (
    NURTURE,
    PYTHON,
    Processes,
    busy_share,
    machine_cpu,
    pids_with,
    run_main,
    tree_cpu_seconds,
    wait_until_idle,
    wide_console,
)
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from psycopg.types.json import Jsonb
from rich.table import Table
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.helpers import free_port, fresh_database, make_runtime
from tests.servers.databases import postgres
from worker.api.events import EventBatch
from worker.store.migrate import upgrade
from worker.support.deploy import deploy

GOAL = 1000.0
BATCH = 1000
TOKEN = "bench-token"
TABLES = ("leads", "events", "enrollments", "step_runs", "timeline", "crm_outbox")
console = wide_console()

SEQUENCE = """\
name: Trial
description: Four emails over a trial's first week.
enroll: {on: trial_started}
exit_on: [subscription_upgraded, unsubscribed]
steps:
  - {id: welcome, day: 1, email: trial/step}
  - {id: tour, day: 3, email: trial/step}
  - {id: case-study, day: 5, email: trial/step}
  - {id: upgrade-offer, day: 7, email: trial/step}
on:
  pricing_page_viewed:
    - send: {id: pricing-breakdown, email: trial/step, delay: 1h}
"""
SCORING = """\
kind: scoring
points: {pricing_page_viewed: 10, trial_started: 5}
segments: {cold: 0, warm: 20, hot: 50}
"""
TEMPLATE = """\
---
subject: "Hi {{ lead.first_name | default('there') }}"
---
<p>Day {{ 1 }} of your trial. <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
"""


# -- the empty endpoint: the HTTP floor --------------------------------------------------------

echo_app = FastAPI()


@echo_app.post("/v1/events/batch")
def echo_batch(batch: EventBatch) -> JSONResponse:
    """Parses the same body as the real endpoint, answers one result per item, writes nothing."""
    results = [
        {"event_id": uuid.uuid4().hex, "lead_id": uuid.uuid4().hex, "duplicate": False,
         "enrolled": [], "exited": []}
        for _ in batch.events
    ]  # fmt: skip
    return JSONResponse({"results": results}, status_code=207)


@echo_app.get("/healthz")
def echo_health() -> dict[str, str]:
    return {"status": "ok"}


# -- the load ----------------------------------------------------------------------------------


def signup(key: str) -> dict[str, Any]:
    return {
        "id": f"evt-{key}",
        "type": "trial_started",
        "lead": {"email": f"{key}@example.com", "first_name": "Ana", "timezone": "Europe/Berlin",
                 "attributes": {"plan": "pro"}},
        "properties": {"source": "bench"},
    }  # fmt: skip


def pricing_view(existing: str, key: str) -> dict[str, Any]:
    return {
        "id": f"evt-{key}",
        "type": "pricing_page_viewed",
        "lead": {"email": f"{existing}@example.com"},
        "properties": {"path": "/pricing"},
    }


def mixed_events(count: int, prefix: str, existing: list[str], rng: random.Random) -> list[Any]:
    """Half new signups, half pricing views of existing leads, interleaved."""
    found: list[Any] = []
    for number in range(count):
        key = f"{prefix}-{number}"
        found.append(signup(key) if number % 2 == 0 else pricing_view(rng.choice(existing), key))
    return found


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def post_batches(base: str, events: list[Any], streams: int = 1) -> tuple[float, int]:
    """The batches over `streams` connections at once (each posts its share in order, the next
    as soon as the last is answered); (seconds, items answered with an error)."""
    batches = list(chunks(events, BATCH))
    errors = [0] * streams
    failures: list[str] = []

    def work(number: int) -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"},
                          timeout=300) as client:  # fmt: skip
            for part in batches[number::streams]:
                response = client.post("/v1/events/batch", json={"events": part})
                if response.status_code != 207:
                    failures.append(f"batch answered {response.status_code}: "
                                    f"{response.text[:500]}")  # fmt: skip
                    return
                errors[number] += sum(1 for r in response.json()["results"] if "error" in r)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(streams)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(failures[0])
    return time.perf_counter() - began, sum(errors)


def post_singles(base: str, events: list[Any], clients: int) -> tuple[float, int]:
    """`clients` threads, each posting its share one event per request."""
    failures = [0] * clients

    def work(number: int) -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"},
                          timeout=60) as client:  # fmt: skip
            for event in events[number::clients]:
                response = client.post("/v1/events", json=event)
                if response.status_code not in (200, 202):
                    failures[number] += 1

    threads = [threading.Thread(target=work, args=(n,)) for n in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began, sum(failures)


def wait_healthy(base: str, processes: Processes, name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        processes.check()
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not answer /healthz in {timeout:.0f} s:\n{processes.log(name)}")


# -- the write floor: raw psycopg executemany ----------------------------------------------------


def row_counts(database_url: str) -> dict[str, int]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return {
                name: int(connection.execute(text(f"SELECT count(*) FROM {name}")).scalar_one())
                for name in TABLES
            }
    finally:
        engine.dispose()


def sample_rows(database_url: str) -> dict[str, dict[str, Any]]:
    """One real row of each table Nurture wrote, as column → value."""
    found = {}
    with psycopg.connect(libpq_url(database_url)) as connection:
        for name in TABLES:
            cursor = connection.execute(f"SELECT * FROM {name} ORDER BY random() LIMIT 1")
            names = [d.name for d in cursor.description or ()]
            row = cursor.fetchone()
            assert row is not None, name
            found[name] = dict(zip(names, row, strict=True))
    return found


def _value(value: Any) -> Any:
    return Jsonb(value) if isinstance(value, dict | list) else value


def raw_writes(
    database_url: str, samples: dict[str, dict[str, Any]], added: dict[str, int], events: int
) -> float:
    """As many rows per table as Nurture added, cloned from its own rows, written with
    executemany in one transaction per 1,000 events; plus one UPDATE of a lead per
    behavioural event. Returns the seconds."""
    batches = max(1, events // BATCH)
    prepared: list[list[tuple[str, list[tuple[Any, ...]]]]] = [[] for _ in range(batches)]
    lead_ids: list[str] = []
    for name in TABLES:
        serial = name in ("timeline", "crm_outbox")  # ids from a sequence
        sample = {k: v for k, v in samples[name].items() if not (serial and k == "id")}
        columns = list(sample)
        quoted = ", ".join(f'"{c}"' for c in columns)
        statement = f"INSERT INTO {name} ({quoted}) VALUES ({', '.join(['%s'] * len(columns))})"
        for number, part in enumerate(_spread(added[name], batches)):
            rows = []
            for _ in range(part):
                row = dict(sample)
                if "id" in row:
                    row["id"] = uuid.uuid4().hex
                for unique in ("email", "idempotency_key"):
                    if row.get(unique) is not None:
                        row[unique] = f"{uuid.uuid4().hex}@example.com"
                if name == "leads":
                    lead_ids.append(row["id"])
                rows.append(tuple(_value(row[c]) for c in columns))
            prepared[number].append((statement, rows))
    update = "UPDATE leads SET score = %s, segment = %s, updated_at = %s WHERE id = %s"
    score = Jsonb(samples["leads"]["score"])
    with psycopg.connect(libpq_url(database_url)) as connection:
        began = time.perf_counter()
        for number, statements in enumerate(prepared):
            with connection.transaction(), connection.cursor() as cursor:
                for statement, rows in statements:
                    if rows:
                        cursor.executemany(statement, rows)
                behavioural = [
                    (score, "cold", datetime.now(UTC), lead_id)
                    for lead_id in lead_ids[number::batches][: BATCH // 2]
                ]
                cursor.executemany(update, behavioural)
        return time.perf_counter() - began


def _spread(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if n < extra else 0) for n in range(parts)]


# -- the run -------------------------------------------------------------------------------------


@dataclass
class Measured:
    events: int
    singles: int
    clients: int
    api_workers: int
    streams: int
    seed_seconds: float = 0.0
    batch_seconds: float = 0.0
    batch_errors: int = 0
    single_seconds: float = 0.0
    single_failures: int = 0
    echo_seconds: float = 0.0
    raw_seconds: float = 0.0
    added: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    busy: float = 0.0
    others: float = 0.0
    checks: list[tuple[str, bool, str]] = field(default_factory=list)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events through the batch "
                        "endpoint (a multiple of 1,000)")  # fmt: skip
    parser.add_argument("--single", type=int, default=None, help="events through /v1/events "
                        "(default: a quarter of --events)")  # fmt: skip
    parser.add_argument("--clients", type=int, default=4, help="concurrent single-event clients")
    parser.add_argument("--api-workers", type=int, default=2, help="`nurture api --workers`: "
                        "uvicorn processes (one per core)")  # fmt: skip
    parser.add_argument("--streams", type=int, default=None, help="batches posted at once "
                        "(default: one per API worker)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="4,000 events, 1,000 single")
    parser.add_argument("--keep", action="store_true", help="keep the folder with the logs")
    parser.add_argument("--wait-idle", type=float, default=120.0, help="wait up to this long "
                        "for other processes to leave the machine idle")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.events = 4_000
    args.events = max(BATCH, args.events // BATCH * BATCH)
    if args.single is None:
        args.single = args.events // 4
    if args.streams is None:
        args.streams = args.api_workers
    return args


def main() -> int:
    args = arguments()
    folder = Path(tempfile.mkdtemp(prefix="nurture-bench-ingest-"))
    try:
        measured = run(args, folder)
    finally:
        if args.keep:
            console.print(f"logs kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return report(measured)


def run(args: argparse.Namespace, folder: Path) -> Measured:
    measured = Measured(args.events, args.single, args.clients, args.api_workers, args.streams)
    rng = random.Random(4)
    with postgres() as server_url:
        database_url = fresh_database(server_url)
        baseline_url = fresh_database(server_url)
        upgrade(baseline_url)
        runtime = make_runtime(
            folder,
            database_url,
            {
                "sequences/trial.yaml": SEQUENCE,
                "sequences/scoring.yaml": SCORING,
                "templates/trial/step.html.j2": TEMPLATE,
            },
        )
        deploy(runtime, reload=False)
        runtime.database.dispose()
        env = {
            "NURTURE_HOME": str(folder / ".nurture"),
            "NURTURE_DATABASE_URL": database_url,
            "NURTURE_SEQUENCES_DIR": str(folder / "sequences"),
            "NURTURE_TEMPLATES_DIR": str(folder / "templates"),
            "NURTURE_OUTBOX_DIR": str(folder / "outbox"),
            "NURTURE_API_TOKENS": TOKEN,
        }
        api_port, echo_port = free_port(), free_port()
        api, echo = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{echo_port}"
        with Processes(folder, env) as processes:
            processes.start("api", [*NURTURE, "api", "--port", str(api_port),
                                    "--workers", str(args.api_workers)])  # fmt: skip
            here = str(Path(__file__).parent)
            processes.start("echo", [PYTHON, "-m", "uvicorn", "--app-dir", here, "--port",
                                     str(echo_port), "--log-level", "warning",
                                     "ingest:echo_app"])  # fmt: skip
            wait_healthy(api, processes, "api")
            wait_healthy(echo, processes, "echo")
            seeds = [f"seed-{n}" for n in range(args.events // 2)]
            console.print(f"warm-up: {len(seeds):,} leads enrolled through the batch endpoint …")
            measured.seed_seconds, seed_errors = post_batches(api, [signup(s) for s in seeds])
            if seed_errors:
                raise RuntimeError(f"{seed_errors} warm-up events failed")
            events = mixed_events(args.events, "batch", seeds, rng)
            singles = mixed_events(args.single, "single", seeds, rng)
            wait_until_idle(console, args.wait_idle)
            before_rows = row_counts(database_url)
            servers = pids_with(f"-p {make_url(database_url).port} ")
            api_pid = processes.running["api"].pid

            def cpu_now() -> dict[str, float]:
                return {
                    "api (uvicorn)": tree_cpu_seconds(api_pid),
                    "postgres": sum(tree_cpu_seconds(pid) for pid in servers),
                    "load generator": own_cpu(),
                }

            console.print(f"batch: {args.events:,} events in batches of {BATCH:,} …")
            cpu_before, machine_before = cpu_now(), machine_cpu()
            measured.batch_seconds, measured.batch_errors = post_batches(api, events, args.streams)
            cpu_after, machine_after = cpu_now(), machine_cpu()
            measured.cpu = {k: cpu_after[k] - cpu_before[k] for k in cpu_after}
            measured.busy = busy_share(machine_before, machine_after)
            mine = sum(measured.cpu.values())
            measured.others = max(0.0, machine_after[0] - machine_before[0] - mine)
            after_rows = row_counts(database_url)
            measured.added = {k: after_rows[k] - before_rows[k] for k in TABLES}
            check_rows(measured, before_rows, after_rows, args.events)

            console.print(f"single: {args.single:,} events, {args.clients} clients …")
            measured.single_seconds, measured.single_failures = post_singles(
                api, singles, args.clients
            )
            console.print("baseline: the same batch bodies to an empty endpoint …")
            measured.echo_seconds, _ = post_batches(echo, events, args.streams)
        console.print("baseline: raw psycopg executemany of the same rows …")
        measured.raw_seconds = raw_writes(
            baseline_url, sample_rows(database_url), measured.added, args.events
        )
    return measured


def check_rows(
    measured: Measured, before: dict[str, int], after: dict[str, int], events: int
) -> None:
    new_leads = after["leads"] - before["leads"]
    measured.checks.append(
        ("new leads = signups", new_leads == events // 2, f"{new_leads:,} / {events // 2:,}")
    )
    stored = after["events"] - before["events"]
    measured.checks.append(("events stored ≥ events sent", stored >= events, f"{stored:,}"))
    enrolled = after["enrollments"] - before["enrollments"]
    measured.checks.append(
        ("enrollments = signups", enrolled == events // 2, f"{enrolled:,} / {events // 2:,}")
    )
    measured.checks.append(("items answered with an error", measured.batch_errors == 0,
                            f"{measured.batch_errors:,}"))  # fmt: skip


def own_cpu() -> float:
    import os

    times = os.times()
    return times.user + times.system


def report(m: Measured) -> int:
    batch_rate = m.events / m.batch_seconds
    single_rate = m.singles / m.single_seconds
    echo_rate = m.events / m.echo_seconds
    raw_rate = m.events / m.raw_seconds
    table = Table(title=f"ingest: {m.events:,} events in batches of {BATCH:,} (half new "
                  "signups into a 4-step sequence, half pricing views), PostgreSQL, "
                  f"{m.api_workers} API worker(s), {m.streams} stream(s)")  # fmt: skip
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("warm-up: leads seeded through the batch endpoint",
                  f"{m.events // 2:,} in {m.seed_seconds:,.1f} s")  # fmt: skip
    verdict = "[green]met" if batch_rate >= GOAL else "[red]missed"
    table.add_row(f"[b]/v1/events/batch, events / s (goal ≥ {GOAL:,.0f})",
                  f"[b]{batch_rate:,.0f} {verdict}")  # fmt: skip
    table.add_row("  time per batch of 1,000", f"{m.batch_seconds / (m.events / BATCH):,.2f} s")
    table.add_row(f"[b]/v1/events, events / s ({m.clients} clients, {m.singles:,} events)",
                  f"[b]{single_rate:,.0f}")  # fmt: skip
    table.add_row("  single-event failures", f"{m.single_failures:,}")
    table.add_row("[b]baseline: raw psycopg executemany of the same rows, events / s",
                  f"[b]{raw_rate:,.0f}")  # fmt: skip
    table.add_row("[b]baseline: empty FastAPI endpoint, same bodies, events / s",
                  f"[b]{echo_rate:,.0f}")  # fmt: skip
    table.add_row("[b]batch / raw writes", f"[b]{batch_rate / raw_rate:.3f}")
    table.add_row("[b]batch / empty endpoint", f"[b]{batch_rate / echo_rate:.3f}")
    table.add_row("[b]single / batch", f"[b]{single_rate / batch_rate:.3f}")
    table.add_row("rows added by the batches",
                  ", ".join(f"{k} {v:,}" for k, v in m.added.items()))  # fmt: skip
    table.add_row("machine CPU busy during the batches (2 cores = 100%)", f"{m.busy:.0%}")
    for name, seconds in sorted(m.cpu.items(), key=lambda kv: -kv[1]):
        table.add_row(f"  CPU {name}", f"{seconds:,.1f} s ({seconds * 1000 / m.events:,.2f} "
                      "ms/event)")  # fmt: skip
    table.add_row("  CPU other processes on the machine", f"{m.others:,.1f} s")
    ok = True
    for name, passed, value in m.checks:
        ok = ok and passed
        table.add_row(f"check: {name}", f"{value} {'[green]ok' if passed else '[red]NO'}")
    console.print(table)
    console.print(
        f"ingest ({m.api_workers} API worker(s), {m.streams} stream(s)): "
        f"batch {batch_rate:,.0f} events/s ({'met' if batch_rate >= GOAL else 'missed'} "
        f"≥ {GOAL:,.0f}), single {single_rate:,.0f} events/s; raw writes {raw_rate:,.0f}, "
        f"empty endpoint {echo_rate:,.0f}; batch/raw {batch_rate / raw_rate:.3f}, "
        f"batch/empty {batch_rate / echo_rate:.3f}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    run_main(main)
