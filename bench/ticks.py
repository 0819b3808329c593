"""Benchmark: does the lead tick's cost per lead stay flat however many leads wait?

Two PostgreSQL databases in the same run: 1,000,000 leads waiting for a later wake time and
the baseline, 10,000; each also holds `--rounds` × `--due` leads due. A due lead viewed the
pricing page twice (60 points, hot, half-life 1 day) and then went quiet, so its tick moves it
hot → cold (`segment_changed`) and emits `lead_inactive`, which enrolls it in a win-back
sequence: events, an enrollment, a step run, timeline rows and CRM outbox rows per lead.

- **Measure**: leads ticked per second by `wake_due_leads` (what the `leads.tick` task runs:
  chunks of 100 in one transaction each), one round of `--due` leads at a time, alternating
  between the databases; the median of the rounds.
- **Goal**: time per lead, 1M waiting / 10k waiting ≤ 1.2. EXPLAIN (ANALYZE, BUFFERS) of the
  wake query shows the plan at both sizes.
- **Also**: the capacity per day at the measured rate, with the task's 20 s of every 30 s
  (goal ≥ 1,000,000), and SQL statements per lead ticked.

    .venv/bin/python bench/ticks.py                  # 1,000,000 waiting, ~1 min
    .venv/bin/python bench/ticks.py --quick          # 100,000 waiting, fewer rounds, ~15 s

Not part of the test run. Needs the PostgreSQL binaries (scripts/install-test-servers).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import psycopg
from _data import libpq_url, scalar, table, vacuum_analyze
from _servers import run_main, wait_until_idle, wide_console
from rich.table import Table
from sqlalchemy import Engine, create_engine, event, select
from sqlmodel import col

from tests.helpers import fresh_database, write_project
from tests.servers.databases import postgres
from worker.config import Settings
from worker.ingest.schemas import EventIn
from worker.ingest.service import ingest
from worker.runtime.process import Runtime, build
from worker.store.db import transaction
from worker.store.leads import wake_query
from worker.store.migrate import upgrade
from worker.store.tables import LeadRow
from worker.support.deploy import deploy
from worker.world.ticks import CHUNK, wake_due_leads

GOAL = 1.2
DAY_GOAL = 1_000_000
TICK_SHARE = 20.0 / 30.0
"""The `leads.tick` task runs for up to 20 s of every 30 (worker/tasks.py)."""
console = wide_console()

FILES = {
    "sequences/scoring.yaml": """
        kind: scoring
        points: {pricing_page_viewed: 30}
        decay: {half_life: 1d}
        segments: {hot: 50, warm: 20, cold: 0}
    """,
    "sequences/policy.yaml": """
        kind: policy
        inactive_after: 30d
    """,
    "sequences/winback.yaml": """
        name: Win back
        enroll: {on: lead_inactive}
        steps:
          - {id: miss-you, day: 1, email: w/hello}
    """,
    "templates/w/hello.html.j2": (
        '---\nsubject: "We miss you"\n---\n<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>\n'
    ),
}


@dataclass
class State:
    name: str
    waiting: int
    url: str = ""
    build_seconds: float = 0.0
    size_mib: float = 0.0
    rates: list[float] = field(default_factory=list)
    """Leads ticked per second, one per round."""
    statements: list[int] = field(default_factory=list)
    ticked: int = 0
    plan: str = ""
    server_ms: float = 0.0
    buffers: int = 0
    inactive: int = 0
    enrollments: int = 0


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--waiting", type=int, default=1_000_000, help="leads waking later")
    parser.add_argument("--baseline-waiting", type=int, default=10_000)
    parser.add_argument("--due", type=int, default=1_000, help="leads due per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per database")
    parser.add_argument("--quick", action="store_true",
                        help="100,000 waiting, 500 due per round, 3 rounds")  # fmt: skip
    parser.add_argument("--wait-idle", type=float, default=300.0, help="wait up to this long for "
                        "other processes to leave the machine idle")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.waiting, args.due, args.rounds = 100_000, 500, 3
    return args


def main() -> int:
    args = arguments()
    folder = Path(tempfile.mkdtemp(prefix="nurture-bench-ticks-"))
    states = [State("baseline", args.baseline_waiting), State("large", args.waiting)]
    try:
        write_project(folder, FILES)
        with postgres() as server_url:
            start = datetime.now(UTC).replace(microsecond=0)
            for state in states:
                console.print(f"{state.name}: {state.waiting:,} waiting + "
                              f"{args.rounds} × {args.due:,} due …")  # fmt: skip
                state.url = fresh_database(server_url)
                build_database(args, folder, state, start)
            wait_until_idle(console, args.wait_idle)
            measure(args, folder, states, start)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return report(args, states)


def runtime_for(folder: Path, url: str) -> Runtime:
    return build(
        Settings(
            home=folder / ".nurture",
            database_url=url,
            sequences_dir=folder / "sequences",
            templates_dir=folder / "templates",
            outbox_dir=folder / "outbox",
        )
    )


def round_time(start: datetime, number: int) -> datetime:
    """The virtual time round `number` ticks at: past the quiet spell and the score's drop."""
    return start + timedelta(days=31, hours=number)


def build_database(args: argparse.Namespace, folder: Path, state: State, start: datetime) -> None:
    """One real hot lead made through ingest, then cloned with COPY: `rounds` × `due` leads
    due one round after another, and the waiting ones after the last round."""
    began = time.perf_counter()
    upgrade(state.url)
    runtime = runtime_for(folder, state.url)
    deploy(runtime, reload=False)
    lead = {"email": "template@example.com", "first_name": "Ana"}
    with transaction(runtime.database) as session:
        for _ in range(2):
            payload = {"type": "pricing_page_viewed", "lead": lead}
            ingest(session, runtime.engine, EventIn.model_validate(payload), start)
    with transaction(runtime.database) as session:
        row = session.execute(
            select(LeadRow).where(col(LeadRow.email) == lead["email"])
        ).scalar_one()
        template = row.model_dump()
        row.wake_at = None  # the template itself is never due
        session.add(row)
    runtime.database.dispose()

    millisecond = timedelta(milliseconds=1)

    def due(n: int) -> datetime:
        number, place = divmod(n, int(args.due))
        return round_time(start, number) - timedelta(minutes=30) + place * millisecond

    last = round_time(start, args.rounds)
    spread = timedelta(days=30) / max(1, state.waiting)
    copy_leads(state.url, template, args.rounds * args.due, due, "d")
    later = last + timedelta(days=1)
    copy_leads(state.url, template, state.waiting, lambda n: later + n * spread, "w")
    vacuum_analyze(state.url)
    state.build_seconds = time.perf_counter() - began
    engine = create_engine(state.url)
    try:
        state.size_mib = int(scalar(engine, "SELECT pg_database_size(current_database())")) / 2**20
    finally:
        engine.dispose()


def copy_leads(url: str, template: dict[str, Any], count: int, wake: Any, prefix: str) -> None:
    names = [c.name for c in table("leads").columns]
    quoted = ", ".join(f'"{n}"' for n in names)

    def rows() -> Iterator[list[Any]]:
        for number in range(count):
            values = {**template, "id": uuid.uuid4().hex, "email": f"{prefix}{number}@example.com",
                      "wake_at": wake(number)}  # fmt: skip
            yield [json.dumps(v) if isinstance(v, dict | list) else v for v in
                   (values[n] for n in names)]  # fmt: skip

    iterator = rows()
    with psycopg.connect(libpq_url(url)) as connection:
        while part := list(islice(iterator, 100_000)):
            with (
                connection.transaction(),
                connection.cursor() as cursor,
                cursor.copy(f"COPY leads ({quoted}) FROM STDIN") as copy,
            ):
                for row in part:
                    copy.write_row(row)


def measure(args: argparse.Namespace, folder: Path, states: list[State], start: datetime) -> None:
    runtimes = {state.name: runtime_for(folder, state.url) for state in states}
    counted: dict[str, int] = {state.name: 0 for state in states}
    for state in states:
        database = runtimes[state.name].database

        def count(*_: Any, name: str = state.name) -> None:
            counted[name] += 1

        event.listen(database, "before_cursor_execute", count)
        explain(database, state, round_time(start, 0))
    try:
        for number in range(args.rounds):
            order = states if number % 2 == 0 else list(reversed(states))
            for state in order:
                before = counted[state.name]
                began = time.perf_counter()
                woken = wake_due_leads(runtimes[state.name], round_time(start, number),
                                       seconds=float("inf"))  # fmt: skip
                elapsed = time.perf_counter() - began
                if woken.leads != args.due or woken.failed:
                    raise RuntimeError(f"{state.name}: round {number} ticked {woken.leads}, "
                                       f"expected {args.due}")  # fmt: skip
                state.ticked += woken.leads
                state.rates.append(woken.leads / elapsed)
                state.statements.append(counted[state.name] - before)
        for state in states:
            engine = runtimes[state.name].database
            inactive = "SELECT count(*) FROM events WHERE type = 'lead_inactive'"
            state.inactive = int(scalar(engine, inactive))
            state.enrollments = int(scalar(engine, "SELECT count(*) FROM enrollments"))
    finally:
        for found in runtimes.values():
            found.database.dispose()


def explain(engine: Engine, state: State, at: datetime) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of the wake query, as `wake_due_leads` sends it."""
    statement = wake_query(at, CHUNK).compile(
        dialect=engine.dialect, compile_kwargs={"literal_binds": True}
    )
    with engine.connect() as connection:
        found = connection.exec_driver_sql(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + str(statement)
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


def report(args: argparse.Namespace, states: list[State]) -> int:
    base, large = states
    title = (f"ticks: {large.waiting:,} waiting vs {base.waiting:,} waiting, {args.rounds} rounds "
             f"of {args.due:,} due, PostgreSQL")  # fmt: skip
    table_ = Table(title=title)
    table_.add_column("measure")
    for state in states:
        table_.add_column(f"{state.waiting:,} waiting", justify="right")
    table_.add_column("ratio", justify="right")

    def row(label: str, values: tuple[str, str], ratio: str = "") -> None:
        table_.add_row(label, *values, ratio)

    row("build (ingest + COPY + VACUUM ANALYZE)",
        (f"{base.build_seconds:,.1f} s", f"{large.build_seconds:,.1f} s"))  # fmt: skip
    row("database size", (f"{base.size_mib:,.0f} MiB", f"{large.size_mib:,.0f} MiB"))
    medians = [statistics.median(s.rates) for s in states]
    ratio = medians[0] / medians[1]  # time per lead, large / baseline
    verdict = "[green]met" if ratio <= GOAL else "[red]missed"
    row("[b]leads ticked / s, median of rounds", (f"{medians[0]:,.0f}", f"{medians[1]:,.0f}"),
        f"[b]{ratio:.3f} {verdict} (time per lead, goal ≤ {GOAL})")  # fmt: skip
    for label, pick in (("slowest round", min), ("fastest round", max)):
        row(f"  {label}", (f"{pick(base.rates):,.0f}", f"{pick(large.rates):,.0f}"))
    per_lead = [statistics.mean(s.statements) / args.due for s in states]
    statements = (f"{per_lead[0]:.2f}", f"{per_lead[1]:.2f}")
    row("  SQL statements per lead (an executemany counts once)", statements,
        f"{per_lead[1] / per_lead[0]:.3f}")  # fmt: skip
    capacity = [rate * TICK_SHARE * 86_400 for rate in medians]
    met = min(capacity) >= DAY_GOAL
    row(f"[b]leads a day at this rate (20 s of every 30; goal ≥ {DAY_GOAL:,})",
        (f"{capacity[0]:,.0f}", f"{capacity[1]:,.0f}"),
        "[green]met" if met else "[red]missed")  # fmt: skip
    row("wake query: server execution (EXPLAIN ANALYZE)",
        (f"{base.server_ms:,.2f} ms", f"{large.server_ms:,.2f} ms"),
        f"{large.server_ms / base.server_ms:.3f}")  # fmt: skip
    row("  buffers touched", (f"{base.buffers:,}", f"{large.buffers:,}"))
    table_.add_row("  plan", base.plan, large.plan, "")
    row("check: lead_inactive events", (f"{base.inactive:,}", f"{large.inactive:,}"))
    row("check: win-back enrollments", (f"{base.enrollments:,}", f"{large.enrollments:,}"))
    console.print(table_)
    expected = args.rounds * args.due
    complete = all(s.inactive == s.enrollments == s.ticked == expected for s in states)
    if not complete:
        console.print("[red]not every due lead was ticked once[/]")
    return 0 if complete and ratio <= GOAL and met else 1


if __name__ == "__main__":
    run_main(main)
