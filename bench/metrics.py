"""Benchmark: does a scrape of `/metrics` cost the same at 1,000,000 events as at 10,000?

Two PostgreSQL databases in the same run, made as `console.py` makes its own: one real lead
through the event API and the worker (9 events, 10 step runs: 3 sent, 5 waiting days ahead, 2
skipped; 3 messages; a pushed CRM change), cloned with COPY — 1,112 leads (10,008 events,
11,120 step runs) and 111,112 leads (1,000,008 events, 1,111,120 step runs). Both get the same
work waiting now, as a running installation has whatever its history: 200 steps due, 20 in
doubt (`unknown`), 30 held by a paused sequence, 50 CRM changes not pushed, and a worker's and
beat's heartbeat.

- **Measure**: `GET /metrics` through the app (TestClient, in this process, no network),
  median of 20 each, alternating between the databases after 3 warm-up scrapes.
- **Goal**: 1,000,000 events / 10,000 ≤ 1.2. EXPLAIN of each gauge query at the large size
  shows the index it runs on. The values scraped must be equal at both sizes.

    .venv/bin/python bench/metrics.py             # 10,000 vs 1,000,000 events, ~4 min
    .venv/bin/python bench/metrics.py --quick     # 10,000 vs 200,000 events

Not part of the test run. Needs the PostgreSQL binaries (scripts/install-test-servers).
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

from _data import scalar, vacuum_analyze
from _servers import run_main, wait_until_idle, wide_console
from console import FILES, copy_clones, real_lead, runtime_for
from fastapi.testclient import TestClient
from rich.table import Table
from sqlalchemy import Engine, bindparam, create_engine, text

from tests.helpers import fresh_database, samples, write_project
from tests.servers.databases import postgres
from worker.api.app import create_app
from worker.runtime.heartbeat import Heart
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.gauges import WAITING
from worker.store.migrate import upgrade
from worker.store.switches import write_switch
from worker.support.deploy import deploy

RATIO_GOAL = 1.2
EVENTS_PER_LEAD = 9
console = wide_console()
WAITING_NOW = {"due": 200, "unknown": 20, "held": 30, "crm": 50}
GAUGE_QUERIES = {
    "steps due": "SELECT channel, count(*), min(due_at) FROM step_runs WHERE status = 'pending' "
    "AND due_at IS NOT NULL AND due_at <= now() GROUP BY channel",
    "steps unknown": "SELECT count(*) FROM step_runs WHERE status = 'unknown'",
    "steps held": WAITING,
    "CRM backlog": "SELECT count(*) FROM crm_outbox WHERE status = 'pending'",
    "CRM lag": "SELECT created_at FROM crm_outbox WHERE status = 'pending' ORDER BY id LIMIT 1",
}


@dataclass
class State:
    name: str
    leads: int
    url: str = ""
    build_seconds: float = 0.0
    events: int = 0
    step_runs: int = 0
    times: list[float] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)
    plans: dict[str, str] = field(default_factory=dict)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--baseline-events", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="200,000 events, not 1,000,000")
    parser.add_argument("--wait-idle", type=float, default=300.0)
    args = parser.parse_args()
    if args.quick:
        args.events = 200_000
    return args


def main() -> int:
    args = arguments()
    folder = Path(tempfile.mkdtemp(prefix="nurture-bench-metrics-"))
    sizes = (args.baseline_events, args.events)
    states = [State(name, -(-events // EVENTS_PER_LEAD)) for name, events in
              zip(("baseline", "large"), sizes, strict=True)]  # fmt: skip
    try:
        write_project(folder, FILES)
        with postgres() as server_url:
            for state in states:
                console.print(f"{state.name}: {state.leads:,} leads …")
                state.url = fresh_database(server_url)
                build_database(folder, state)
            wait_until_idle(console, args.wait_idle)
            measure(args, folder, states)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return report(args, states)


def build_database(folder: Path, state: State) -> None:
    began = time.perf_counter()
    upgrade(state.url)
    runtime = runtime_for(folder, state.url)
    deploy(runtime, reload=False)
    template = real_lead(runtime)
    copy_clones(state.url, template, state.leads)
    work_waiting_now(runtime)
    runtime.database.dispose()
    vacuum_analyze(state.url)
    state.build_seconds = time.perf_counter() - began
    engine = create_engine(state.url)
    try:
        state.events = int(scalar(engine, "SELECT count(*) FROM events"))
        state.step_runs = int(scalar(engine, "SELECT count(*) FROM step_runs"))
    finally:
        engine.dispose()


def work_waiting_now(runtime: Runtime) -> None:
    """The same small amount of work waiting at both sizes: some of the waiting steps made
    due, in doubt or held; CRM changes not pushed; heartbeats."""
    now = datetime.now(UTC)
    due, unknown, held = WAITING_NOW["due"], WAITING_NOW["unknown"], WAITING_NOW["held"]
    with transaction(runtime.database) as session:
        ids = [row[0] for row in session.execute(text(
            "SELECT id FROM step_runs WHERE status = 'pending' ORDER BY id LIMIT :n"),
            {"n": due + unknown + held})]  # fmt: skip
        session.execute(text("UPDATE step_runs SET due_at = :at WHERE id IN :ids").bindparams(
            bindparam("ids", expanding=True)),
            {"at": now - timedelta(minutes=5), "ids": ids[:due]})  # fmt: skip
        session.execute(text(
            "UPDATE step_runs SET status = 'unknown', due_at = NULL WHERE id IN :ids").bindparams(
            bindparam("ids", expanding=True)),
            {"ids": ids[due:due + unknown]})  # fmt: skip
        session.execute(text(
            "UPDATE step_runs SET hold = 'sequence_paused', due_at = NULL WHERE id IN :ids"
        ).bindparams(bindparam("ids", expanding=True)),
            {"ids": ids[due + unknown:]})  # fmt: skip
        session.execute(text("DELETE FROM crm_outbox"))
        session.execute(text(  # the CRM's history: one pushed change per lead
            "INSERT INTO crm_outbox (lead_id, kind, payload, created_at, pushed_at, attempts, "
            "status) SELECT id, 'contact', '{}', :at, :at, 1, 'pushed' FROM leads"),
            {"at": now - timedelta(days=1)})  # fmt: skip
        for number in range(WAITING_NOW["crm"]):
            session.execute(text(
                "INSERT INTO crm_outbox (lead_id, kind, payload, created_at, attempts, status) "
                "VALUES (:lead, 'contact', '{}', :at, 0, 'pending')"),
                {"lead": f"lead{number}", "at": now - timedelta(minutes=2)})  # fmt: skip
        write_switch(session, "sequence:promo", "paused", now, "bench")


def measure(args: argparse.Namespace, folder: Path, states: list[State]) -> None:
    runtimes = {state.name: runtime_for(folder, state.url) for state in states}
    clients = {name: TestClient(create_app(_factory(runtime)))
               for name, runtime in runtimes.items()}  # fmt: skip
    try:
        for state in states:
            explain(runtimes[state.name].database, state)
            for role in ("worker", "beat"):  # alive (under 60 s old) while measured
                Heart(_database(runtimes[state.name]), role).beat()
        for repeat in range(args.repeats + 3):  # the first 3 warm the caches, not counted
            order = states if repeat % 2 == 0 else list(reversed(states))
            for state in order:
                began = time.perf_counter()
                answer = clients[state.name].get("/metrics")
                took = time.perf_counter() - began
                if answer.status_code != 200:
                    raise RuntimeError(f"GET /metrics: {answer.status_code}")
                state.values = _gauges(answer.text)
                if repeat >= 3:
                    state.times.append(took)
    finally:
        for each in runtimes.values():
            each.database.dispose()


def _gauges(exposition: str) -> dict[str, float]:
    """The database's gauges (not the heartbeat times, which move with the clock)."""
    wanted = ("nurture_steps_", "nurture_crm_backlog", "nurture_processes_alive",
              "nurture_database_up", "nurture_provider_held")  # fmt: skip
    return {k: v for k, v in samples(exposition).items() if k.startswith(wanted)}


def _factory(runtime: Runtime) -> Any:
    return lambda: runtime


def _database(runtime: Runtime) -> Any:
    return lambda: runtime.database


def explain(engine: Engine, state: State) -> None:
    with engine.connect() as connection:
        connection.execute(text("SET max_parallel_workers_per_gather = 0"))  # as read_gauges
        for label, query in GAUGE_QUERIES.items():
            found = connection.execute(text("EXPLAIN (ANALYZE, FORMAT JSON) " + query))
            raw = found.scalar_one()
            plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]
            nodes: list[str] = []

            def walk(node: dict[str, Any], into: list[str] = nodes) -> None:
                index = f" {node['Index Name']}" if "Index Name" in node else ""
                into.append(node["Node Type"] + index)
                for child in node.get("Plans", []):
                    walk(child, into)

            walk(plan["Plan"])
            state.plans[label] = f"{' ← '.join(nodes)} ({plan['Execution Time']:.2f} ms)"


def report(args: argparse.Namespace, states: list[State]) -> int:
    base, large = states
    table_ = Table(title=f"GET /metrics: {large.events:,} events ({large.step_runs:,} step runs) "
                   f"vs {base.events:,} ({base.step_runs:,}), PostgreSQL, median of "
                   f"{args.repeats}")  # fmt: skip
    table_.add_column("measure")
    table_.add_column(f"{base.events:,} events", justify="right")
    table_.add_column(f"{large.events:,} events", justify="right")
    table_.add_column(f"ratio (goal ≤ {RATIO_GOAL})", justify="right")
    table_.add_row("build (ingest + COPY + VACUUM ANALYZE)", f"{base.build_seconds:,.1f} s",
                   f"{large.build_seconds:,.1f} s", "")  # fmt: skip
    medians = [statistics.median(s.times) * 1000 for s in states]
    ratio = medians[1] / medians[0]
    same = base.values == large.values
    met = ratio <= RATIO_GOAL and same
    verdict = "[green]met" if met else "[red]missed"
    table_.add_row("[b]scrape", f"{medians[0]:,.2f} ms", f"{medians[1]:,.2f} ms",
                   f"[b]{ratio:.3f} {verdict}")  # fmt: skip
    table_.add_row("gauges equal at both sizes", "", "", "yes" if same else "[red]no")
    for label in GAUGE_QUERIES:
        table_.add_row(f"  plan: {label}", base.plans[label], large.plans[label], "")
    console.print(table_)
    if not same:
        console.print({k: (base.values.get(k), large.values.get(k))
                       for k in base.values.keys() | large.values.keys()
                       if base.values.get(k) != large.values.get(k)})  # fmt: skip
    return 0 if met else 1


if __name__ == "__main__":
    run_main(main)
