"""Benchmark: does work waiting in the future cost the dispatcher or the worker anything?

Two PostgreSQL databases in the same run: 1,000,000 steps waiting in the future plus 1,000
due, and the baseline, 10,000 waiting plus the same 1,000 due (a lead and an enrollment for
each step, written with COPY, then VACUUM ANALYZE).

1. Claim time: `claim_due` with limit 200, rolled back after each repetition; the median of
   30 per database, alternating between them. Goal: 1M / 10k <= 1.2. EXPLAIN (ANALYZE,
   BUFFERS) of the same statement shows the plan and the pages it touched.
2. Worker memory: one real worker (Celery's solo pool) and one beat against each database,
   sending the 1,000 due steps to an aiosmtpd sink and running at least 20 s; VmRSS and
   VmHWM from /proc/<pid>/status at the end. Goal: 1M / 10k <= 1.1.

    .venv/bin/python bench/claim.py                    # 1,000,000 waiting
    .venv/bin/python bench/claim.py --waiting 100000   # a quick look

Not part of the test run. Needs PostgreSQL and Redis binaries (scripts/install-test-servers).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis as redis_client
from _data import clones, insert_copy, prepare, scalar, statuses, vacuum_analyze, write_project
from _servers import (
    NURTURE,
    SOLO_WORKER,
    Processes,
    Sink,
    memory_kib,
    nurture_env,
    run_main,
    wait_until_idle,
    wide_console,
)
from rich.table import Table
from sqlalchemy import Engine, create_engine, event
from sqlmodel import Session

from tests.helpers import fresh_database
from tests.servers.databases import postgres, redis
from worker.store.steps import claim_due

CLAIM_GOAL = 1.2
RSS_GOAL = 1.1
console = wide_console()


@dataclass
class State:
    name: str
    waiting: int
    due: int
    url: str = ""
    build_seconds: float = 0.0
    size_mib: float = 0.0
    claims: list[float] = field(default_factory=list)
    plan: str = ""
    server_ms: float = 0.0
    buffers: int = 0
    rss_kib: int = 0
    hwm_kib: int = 0
    peak_rss_kib: int = 0
    sent: int = 0
    ran_seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--waiting", type=int, default=1_000_000, help="steps in the future")
    parser.add_argument("--baseline-waiting", type=int, default=10_000)
    parser.add_argument("--due", type=int, default=1_000)
    parser.add_argument("--limit", type=int, default=200, help="claim_due's batch")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--run-seconds", type=float, default=20.0, help="worker run, at least")
    parser.add_argument("--keep", action="store_true", help="keep the folder with the logs")
    parser.add_argument("--wait-idle", type=float, default=300.0, help="wait up to this long for "
                        "other processes to leave the machine idle")  # fmt: skip
    return parser.parse_args()


def main() -> int:
    args = arguments()
    folder = Path(tempfile.mkdtemp(prefix="nurture-bench-claim-"))
    states = [State("baseline", args.baseline_waiting, args.due),
              State("large", args.waiting, args.due)]  # fmt: skip
    try:
        run(args, folder, states)
    finally:
        if args.keep:
            console.print(f"logs kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return report(args, states)


def run(args: argparse.Namespace, folder: Path, states: list[State]) -> None:
    write_project(folder)
    (folder / "redis").mkdir()
    with postgres() as server_url:
        for state in states:
            console.print(f"{state.name}: {state.waiting:,} waiting + {state.due:,} due …")
            state.url = fresh_database(server_url)
            build(state, folder)
        wait_until_idle(console, args.wait_idle)
        measure_claims(args, states)
        with redis(folder / "redis") as broker_url, Sink() as sink:
            for state in states:
                wait_until_idle(console, args.wait_idle)
                run_worker(args, folder, state, broker_url, sink)


def build(state: State, folder: Path) -> None:
    began = time.perf_counter()
    template = prepare(folder, state.url)
    now = datetime.now(UTC)
    spread = timedelta(days=30) / max(1, state.waiting)
    soon = now + timedelta(hours=1)
    insert_copy(state.url, clones(template, state.waiting, lambda n: soon + n * spread, "w"))
    past = now - timedelta(minutes=10)
    millisecond = timedelta(milliseconds=1)
    insert_copy(state.url, clones(template, state.due, lambda n: past + n * millisecond, "d"))
    vacuum_analyze(state.url)
    state.build_seconds = time.perf_counter() - began
    engine = create_engine(state.url)
    try:
        size = scalar(engine, "SELECT pg_database_size(current_database())")
        state.size_mib = int(size) / 2**20
    finally:
        engine.dispose()


def claim_once(engine: Engine, limit: int) -> tuple[float, int]:
    with Session(engine) as session:
        began = time.perf_counter()
        leased = claim_due(session, datetime.now(UTC), limit, timedelta(seconds=60))
        elapsed = time.perf_counter() - began
        session.rollback()
    return elapsed, len(leased)


def measure_claims(args: argparse.Namespace, states: list[State]) -> None:
    engines = {state.name: create_engine(state.url) for state in states}
    try:
        for state in states:
            for _ in range(3):  # warm the pool, the plan cache and the pages
                claim_once(engines[state.name], args.limit)
            explain(engines[state.name], state, args.limit)
        for repeat in range(args.repeats):
            order = states if repeat % 2 == 0 else list(reversed(states))
            for state in order:
                seconds, count = claim_once(engines[state.name], args.limit)
                if count != min(args.limit, state.due):
                    raise RuntimeError(f"{state.name}: claimed {count}, expected {args.limit}")
                state.claims.append(seconds)
    finally:
        for engine in engines.values():
            engine.dispose()


def explain(engine: Engine, state: State, limit: int) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of the very statement `claim_due` sends, rolled back."""
    seen: list[tuple[str, Any]] = []

    def record(_c: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        claim_once(engine, limit)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    statement, parameters = next(s for s in seen if "step_runs" in s[0])
    with engine.connect() as connection:
        found = connection.exec_driver_sql(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, parameters
        ).scalar_one()
        connection.rollback()
    plan = (json.loads(found) if isinstance(found, str) else found)[0]
    state.server_ms = float(plan["Execution Time"])
    nodes: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        label = node["Node Type"]
        if "Index Name" in node:
            label += f" {node['Index Name']}"
        nodes.append(label)
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    top = plan["Plan"]
    state.buffers = int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0))
    state.plan = " ← ".join(nodes)


def run_worker(
    args: argparse.Namespace, folder: Path, state: State, broker_url: str, sink: Sink
) -> None:
    redis_client.Redis.from_url(broker_url).flushall()
    sink.reset()
    env = nurture_env(
        folder, state.url, broker_url, sink.port,
        NURTURE_HOME=str(folder / f".nurture-{state.name}"),
        NURTURE_DISPATCH_INTERVAL="0.2",
    )  # fmt: skip
    with Processes(folder, env) as processes:
        worker = processes.start(f"worker-{state.name}", SOLO_WORKER)
        processes.start(f"beat-{state.name}", [*NURTURE, "beat"])
        processes.wait_for_log(f"worker-{state.name}", " ready.")
        began = time.monotonic()
        cap = max(args.run_seconds * 10, 300.0)
        while True:
            elapsed = time.monotonic() - began
            state.sent = sink.stats().count
            rss = memory_kib(worker.pid).get("VmRSS", 0)
            state.peak_rss_kib = max(state.peak_rss_kib, rss)
            if (elapsed >= args.run_seconds and state.sent >= state.due) or elapsed > cap:
                break
            processes.check()
            time.sleep(0.25)
        state.ran_seconds = elapsed
        final = memory_kib(worker.pid)
        state.rss_kib, state.hwm_kib = final.get("VmRSS", 0), final.get("VmHWM", 0)
    engine = create_engine(state.url)
    try:
        state.rows = statuses(engine)
    finally:
        engine.dispose()


def report(args: argparse.Namespace, states: list[State]) -> int:
    base, large = states
    table = Table(title=f"claim: {large.waiting:,} waiting vs {base.waiting:,} waiting, "
                  f"{large.due:,} due each, PostgreSQL")  # fmt: skip
    table.add_column("measure")
    for state in states:
        table.add_column(f"{state.waiting:,} waiting", justify="right")
    table.add_column("ratio", justify="right")

    def row(label: str, values: tuple[str, str], ratio: str = "") -> None:
        table.add_row(label, *values, ratio)

    row("build (COPY + VACUUM ANALYZE)", (f"{base.build_seconds:,.1f} s",
                                          f"{large.build_seconds:,.1f} s"))  # fmt: skip
    row("database size", (f"{base.size_mib:,.0f} MiB", f"{large.size_mib:,.0f} MiB"))
    medians = [statistics.median(s.claims) * 1000 for s in states]
    claim_ratio = medians[1] / medians[0]
    verdict = "[green]met" if claim_ratio <= CLAIM_GOAL else "[red]missed"
    row(f"[b]claim_due({args.limit}) median of {args.repeats}",
        (f"{medians[0]:,.2f} ms", f"{medians[1]:,.2f} ms"),
        f"[b]{claim_ratio:.3f} {verdict} (goal ≤ {CLAIM_GOAL})")  # fmt: skip
    for label, pick in (("min", min), ("max", max)):
        row(f"  {label}", (f"{pick(base.claims) * 1000:,.2f} ms",
                           f"{pick(large.claims) * 1000:,.2f} ms"))  # fmt: skip
    row("  server execution (EXPLAIN ANALYZE)",
        (f"{base.server_ms:,.2f} ms", f"{large.server_ms:,.2f} ms"),
        f"{large.server_ms / base.server_ms:.3f}")  # fmt: skip
    row("  buffers touched", (f"{base.buffers:,}", f"{large.buffers:,}"))
    table.add_row("  plan", base.plan, large.plan, "")
    rss_ratio = large.rss_kib / base.rss_kib
    verdict = "[green]met" if rss_ratio <= RSS_GOAL else "[red]missed"
    row("worker ran (solo pool) + beat", (f"{base.ran_seconds:,.1f} s",
                                          f"{large.ran_seconds:,.1f} s"))  # fmt: skip
    row("  due steps sent to the sink", (f"{base.sent:,}", f"{large.sent:,}"))
    by_status = [", ".join(f"{k} {v:,}" for k, v in sorted(s.rows.items())) for s in states]
    row("  step_runs by status", (by_status[0], by_status[1]))
    row("[b]worker VmRSS at the end", (f"{base.rss_kib / 1024:,.1f} MiB",
                                       f"{large.rss_kib / 1024:,.1f} MiB"),
        f"[b]{rss_ratio:.3f} {verdict} (goal ≤ {RSS_GOAL})")  # fmt: skip
    row("  worker VmHWM (peak)", (f"{base.hwm_kib / 1024:,.1f} MiB",
                                  f"{large.hwm_kib / 1024:,.1f} MiB"),
        f"{large.hwm_kib / base.hwm_kib:.3f}")  # fmt: skip
    console.print(table)
    complete = all(s.sent == s.due and s.rows.get("sent") == s.due for s in states)
    if not complete:
        console.print("[red]not every due step was sent exactly once[/]")
    return 0 if complete else 1


if __name__ == "__main__":
    run_main(main)
