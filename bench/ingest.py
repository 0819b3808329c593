"""Benchmark: events per second into Nurture's API on PostgreSQL: batch, single, a Shopify
webhook, and the early answer (`Prefer: respond-async`).

A real `nurture api` (uvicorn, `--api-workers` processes) on loopback, its PostgreSQL and the
load generator all run on this machine. Every batch holds 1,000 events: half `trial_started`
enrolling a new lead into a 4-step sequence, half `pricing_page_viewed` for leads that already
exist (seeded in a warm-up through the same endpoint; the sequence reacts to it and scoring
counts it). Then, in the same run, the same mix one event per request through `/v1/events`
from `--clients` concurrent clients on keep-alive connections (each answer is SPEC §4's, so the
event's enrollment is written when the last answer is in); Shopify `checkouts/create`
deliveries signed as Shopify signs them; and the mix again with `Prefer: respond-async`,
answered (queued) and applied (the intake empty again).

Baselines measured in the same run:
- the floor of the writes: raw psycopg `executemany` (pipelined) writing exactly the rows
  Nurture wrote for the measured batches, table by table, one transaction per 1,000 events,
  into a second database with the same schema, plus one UPDATE per behavioural event's lead;
- the floor of HTTP: an empty FastAPI endpoint under uvicorn that parses the same bodies
  (`{"events": [...]}`) and answers 207 with one result per item.

Goals: ≥ 1,000 events/s through `/v1/events/batch`; `/v1/events` ≥ 0.6 of it; the batch
≥ 0.6 of the raw writes (a stretch).

    .venv/bin/python bench/ingest.py                  # 20,000 events in batches of 1,000
    .venv/bin/python bench/ingest.py --quick          # 4,000 events, a quick look
    .venv/bin/python bench/ingest.py --clients 16,64  # singles from 16, then 64 clients

Not part of the test run. Needs the PostgreSQL binaries (scripts/install-test-servers).
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path

import httpx
from _ingest_floor import TABLES, raw_writes, row_counts, sample_rows
from _ingest_load import (
    BATCH,
    SHOPIFY_SECRET,
    TOKEN,
    Load,
    api_requests,
    blast,
    lone_latencies,
    mixed_events,
    post_batches,
    shopify_requests,
    signup,
)
from _ingest_report import Early, Measured, report
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
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.helpers import free_port, fresh_database, make_runtime
from tests.servers.databases import postgres
from worker.store.migrate import upgrade
from worker.support.deploy import deploy

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
CART = """\
name: Cart
enroll: {on: checkout_started, key: "event.properties.cart_token"}
exit_on: [order_placed]
steps:
  - {id: nudge, at: 1h, email: trial/step}
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


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events through the batch "
                        "endpoint (a multiple of 1,000)")  # fmt: skip
    parser.add_argument("--single", type=int, default=None, help="events through /v1/events "
                        "per client count (default: half of --events)")  # fmt: skip
    parser.add_argument("--clients", default="32", help="concurrent single-event clients; "
                        "several, comma-separated, measure each (16,64)")  # fmt: skip
    parser.add_argument("--api-workers", type=int, default=2, help="`nurture api --workers`: "
                        "uvicorn processes (one per core)")  # fmt: skip
    parser.add_argument("--streams", type=int, default=None, help="batches posted at once "
                        "(default: one per API worker)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="4,000 events, 2,000 single")
    parser.add_argument("--keep", action="store_true", help="keep the folder with the logs")
    parser.add_argument("--wait-idle", type=float, default=120.0, help="wait up to this long "
                        "for other processes to leave the machine idle")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.events = 4_000
    args.events = max(BATCH, args.events // BATCH * BATCH)
    if args.single is None:
        args.single = args.events // 2
    args.clients = [int(c) for c in str(args.clients).split(",") if c.strip()]
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
    return report(measured, console)


def run(args: argparse.Namespace, folder: Path) -> Measured:
    measured = Measured(args.events, args.api_workers, args.streams)
    rng = random.Random(4)
    with postgres() as server_url:
        database_url = fresh_database(server_url)
        baseline_url = fresh_database(server_url)
        upgrade(baseline_url)
        files = {
            "sequences/trial.yaml": SEQUENCE,
            "sequences/cart.yaml": CART,
            "sequences/scoring.yaml": SCORING,
            "templates/trial/step.html.j2": TEMPLATE,
        }
        runtime = make_runtime(folder, database_url, files)
        deploy(runtime, reload=False)
        runtime.database.dispose()
        env = {
            "NURTURE_HOME": str(folder / ".nurture"),
            "NURTURE_DATABASE_URL": database_url,
            "NURTURE_SEQUENCES_DIR": str(folder / "sequences"),
            "NURTURE_TEMPLATES_DIR": str(folder / "templates"),
            "NURTURE_OUTBOX_DIR": str(folder / "outbox"),
            "NURTURE_API_TOKENS": TOKEN,
            "NURTURE_SHOPIFY_WEBHOOK_SECRET": SHOPIFY_SECRET,
        }
        api_port, echo_port = free_port(), free_port()
        api, echo = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{echo_port}"
        with Processes(folder, env) as processes:
            processes.start("api", [*NURTURE, "api", "--port", str(api_port),
                                    "--workers", str(args.api_workers)])  # fmt: skip
            here = str(Path(__file__).parent)
            processes.start("echo", [PYTHON, "-m", "uvicorn", "--app-dir", here, "--port",
                                     str(echo_port), "--log-level", "warning",
                                     "_ingest_floor:echo_app"])  # fmt: skip
            wait_healthy(api, processes, "api")
            wait_healthy(echo, processes, "echo")
            seeds = [f"seed-{n}" for n in range(args.events // 2)]
            console.print(f"warm-up: {len(seeds):,} leads enrolled through the batch endpoint …")
            measured.seed_seconds, seed_errors = post_batches(api, [signup(s) for s in seeds])
            if seed_errors:
                raise RuntimeError(f"{seed_errors} warm-up events failed")
            events = mixed_events(args.events, "batch", seeds, rng)
            wait_until_idle(console, args.wait_idle)
            servers = pids_with(f"-p {make_url(database_url).port} ")
            api_pid = processes.running["api"].pid

            def cpu_now() -> dict[str, float]:
                return {
                    "api (uvicorn)": tree_cpu_seconds(api_pid),
                    "postgres": sum(tree_cpu_seconds(pid) for pid in servers),
                    "load generator": own_cpu(),
                }

            console.print(f"batch: {args.events:,} events in batches of {BATCH:,} …")
            before_rows = row_counts(database_url)
            cpu_before, machine_before = cpu_now(), machine_cpu()
            measured.batch_seconds, measured.batch_errors = post_batches(api, events, args.streams)
            cpu_after, machine_after = cpu_now(), machine_cpu()
            measured.cpu = {k: cpu_after[k] - cpu_before[k] for k in cpu_after}
            measured.busy = busy_share(machine_before, machine_after)
            mine = sum(measured.cpu.values())
            measured.others = max(0.0, machine_after[0] - machine_before[0] - mine)
            after_rows = row_counts(database_url)
            measured.added = {k: after_rows[k] - before_rows[k] for k in TABLES}
            check_written(measured, "batch", before_rows, after_rows, args.events)
            measured.check("batch items answered with an error", measured.batch_errors == 0,
                           f"{measured.batch_errors:,}")  # fmt: skip

            for clients in args.clients:
                singles = mixed_events(args.single, f"single{clients}", seeds, rng)
                console.print(f"single: {args.single:,} events, {clients} clients …")
                before_rows, cpu_before = row_counts(database_url), cpu_now()
                load = blast("127.0.0.1", api_port, api_requests(singles), clients)
                if not measured.singles:
                    cpu_after = cpu_now()
                    measured.single_cpu = {k: cpu_after[k] - cpu_before[k] for k in cpu_after}
                measured.singles.append(load)
                check_written(measured, f"single ({clients} clients)", before_rows,
                              row_counts(database_url), args.single)  # fmt: skip
                check_answers(measured, f"single ({clients} clients)", load)

            lone = mixed_events(200, "lone", seeds, rng)
            measured.lone = lone_latencies("127.0.0.1", api_port, api_requests(lone))

            clients = args.clients[0]
            keys = [f"shop-{n}" for n in range(args.single // 2)]
            console.print(f"shopify: {len(keys):,} signed checkouts, {clients} clients …")
            before = count(database_url, "SELECT count(*) FROM enrollments")
            measured.shopify = blast("127.0.0.1", api_port, shopify_requests(keys), clients)
            enrolled = count(database_url, "SELECT count(*) FROM enrollments") - before
            measured.check("shopify: cart enrollments = checkouts", enrolled == len(keys),
                           f"{enrolled:,} / {len(keys):,}")  # fmt: skip
            check_answers(measured, "shopify", measured.shopify)

            measured.early = measure_early(measured, database_url, api_port, seeds, rng, args)
            console.print("baseline: the same batch bodies to an empty endpoint …")
            measured.echo_seconds, _ = post_batches(echo, events, args.streams)
        console.print("baseline: raw psycopg executemany of the same rows …")
        measured.raw_seconds = raw_writes(
            baseline_url, sample_rows(database_url), measured.added, args.events
        )
    return measured


def measure_early(
    measured: Measured,
    database_url: str,
    api_port: int,
    seeds: list[str],
    rng: random.Random,
    args: argparse.Namespace,
) -> Early:
    """The mix with `Prefer: respond-async`: answered, then applied (the intake empty)."""
    clients = args.clients[0]
    events = mixed_events(args.single, "early", seeds, rng)
    console.print(f"respond-async: {len(events):,} events, {clients} clients …")
    before_rows = row_counts(database_url)
    began = time.perf_counter()
    load = blast("127.0.0.1", api_port, api_requests(events, early=True), clients)
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            while connection.execute(text("SELECT count(*) FROM event_intake")).scalar_one():
                connection.commit()
                time.sleep(0.02)
    finally:
        engine.dispose()
    early = Early(load, time.perf_counter() - began)
    check_written(measured, "respond-async", before_rows, row_counts(database_url), len(events))
    check_answers(measured, "respond-async", load)
    return early


def count(database_url: str, query: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(query)).scalar_one())
    finally:
        engine.dispose()


def check_written(
    measured: Measured, what: str, before: dict[str, int], after: dict[str, int], events: int
) -> None:
    """Every signup's lead and enrollment written, every event stored."""
    signups = (events + 1) // 2
    new_leads = after["leads"] - before["leads"]
    measured.check(f"{what}: new leads = signups", new_leads == signups,
                   f"{new_leads:,} / {signups:,}")  # fmt: skip
    enrolled = after["enrollments"] - before["enrollments"]
    measured.check(f"{what}: enrollments = signups", enrolled == signups,
                   f"{enrolled:,} / {signups:,}")  # fmt: skip
    stored = after["events"] - before["events"]
    measured.check(f"{what}: events stored ≥ events sent", stored >= events, f"{stored:,}")


def check_answers(measured: Measured, what: str, load: Load) -> None:
    other = load.failed - load.dropped
    measured.check(f"{what}: answers other than 200/202", other == 0, f"{other:,}")
    measured.check(f"{what}: connections dropped", load.dropped == 0, f"{load.dropped:,}")


def own_cpu() -> float:
    import os

    times = os.times()
    return times.user + times.system


if __name__ == "__main__":
    run_main(main)
