"""Benchmark: what random kill -9s cost on Redis + PostgreSQL — duplicates and `unknown` steps.

Two real `nurture worker` processes (prefork pools of 2) and one `nurture beat` send every
lead's two emails (the second `after: 1s` the first) to an aiosmtpd sink, under an email rate
limit so the run lasts long enough to be hit. Meanwhile a seeded random clock kills a worker
with SIGKILL (its whole process group) every 0.3–2.0 s and starts it again; half way through,
Redis restarts empty and PostgreSQL restarts under the running workers. Then the sweeper and
the workers finish.

Counted: messages at the sink and how many step runs arrived twice (must be 0); step runs
`sent`, `unknown`, and waiting on an unknown one; pool processes killed. SPEC §8 allows an
`unknown` step only for a crash between the provider accepting and the database recording,
and the hand-over keeps at most one such message per process: `unknown` ≤ pool processes
killed. Exit status 1 when a step arrived twice, a bound is broken, or a step is missing.

    .venv/bin/python bench/faults.py                 # 300 leads, 600 emails
    .venv/bin/python bench/faults.py --seed 7 --leads 100

Not part of the test run. Needs PostgreSQL and Redis binaries (scripts/install-test-servers).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from _servers import NURTURE, Processes, Sink, nurture_env, run_main, wide_console
from rich.table import Table
from sqlalchemy import Engine, create_engine, text

from tests.helpers import free_port
from tests.library import unsubscribe_template
from tests.servers.databases import postgres
from tests.servers.processes import RedisServer, restart_postgres
from worker.config import Settings
from worker.ingest.schemas import EventIn
from worker.ingest.service import ingest
from worker.runtime.process import build
from worker.store.db import transaction
from worker.store.migrate import upgrade

console = wide_console()
SEQUENCE = """\
name: Welcome
enroll: {on: signed_up}
steps:
  - {id: hello, day: 1, email: w/hello}
  - {id: next, after: 1s, email: w/hello}
"""


@dataclass
class Counted:
    leads: int
    kills: int = 0
    restarted_servers_at: int = 0
    """Messages at the sink when Redis and PostgreSQL restarted."""
    seconds: float = 0.0
    sink: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    waiting_on_unknown: int = 0
    message_rows_twice: int = 0
    sent_ids: set[str] = field(default_factory=set)
    missing: list[str] = field(default_factory=list)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--leads", type=int, default=300)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2, help="prefork children each")
    parser.add_argument("--rate", default="40/s", help="the policy's email rate limit")
    parser.add_argument("--settle", type=float, default=180.0, help="give up after this long")
    parser.add_argument("--keep", action="store_true", help="keep the folder with the logs")
    return parser.parse_args()


def main() -> int:
    args = arguments()
    folder = Path(tempfile.mkdtemp(prefix="nurture-bench-faults-"))
    try:
        counted = run(args, folder)
    finally:
        if args.keep:
            console.print(f"logs kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return report(args, counted)


def write_project(folder: Path, rate: str) -> None:
    (folder / "sequences").mkdir(parents=True)
    (folder / "sequences" / "welcome.yaml").write_text(SEQUENCE)
    (folder / "sequences" / "policy.yaml").write_text(
        f"kind: policy\nrate_limits: {{email: {rate}}}\n"
    )
    (folder / "templates" / "w").mkdir(parents=True)
    (folder / "templates" / "w" / "hello.html.j2").write_text(unsubscribe_template("Hello"))


def run(args: argparse.Namespace, folder: Path) -> Counted:
    counted = Counted(args.leads)
    write_project(folder, args.rate)
    (folder / "redis").mkdir()
    redis_server = RedisServer(folder / "redis", free_port())
    redis_server.start()
    try:
        with postgres() as database_url, Sink() as sink:
            upgrade(database_url)
            env = nurture_env(
                folder, database_url, redis_server.url, sink.port,
                NURTURE_SEND_BATCH="10", NURTURE_LEASE_SECONDS="5",
                NURTURE_SWEEP_INTERVAL="1", NURTURE_UNKNOWN_AFTER_SECONDS="5",
            )  # fmt: skip
            database = create_engine(database_url)
            try:
                with Processes(folder, env) as processes:
                    send_under_fire(args, counted, folder, processes, sink, redis_server,
                                    database, database_url)  # fmt: skip
                count_rows(counted, database)
            finally:
                database.dispose()
            counted.sink = Counter(sink.ids())
    finally:
        redis_server.stop()
    return counted


def send_under_fire(
    args: argparse.Namespace,
    counted: Counted,
    folder: Path,
    processes: Processes,
    sink: Sink,
    redis_server: RedisServer,
    database: Engine,
    database_url: str,
) -> None:
    rng = random.Random(args.seed)
    workers = [f"worker-{n}" for n in range(args.workers)]
    worker_argv = [*NURTURE, "worker", "--concurrency", str(args.concurrency)]
    for name in workers:
        processes.start(name, worker_argv)
    processes.start("beat", [*NURTURE, "beat"])
    for name in workers:
        processes.wait_for_log(name, " ready.")
    console.print(f"enrolling {args.leads:,} leads …")
    runtime = build(
        Settings(
            home=folder / ".nurture",
            database_url=database_url,
            sequences_dir=folder / "sequences",
            templates_dir=folder / "templates",
        )
    )
    began = time.monotonic()
    for number in range(args.leads):
        payload = {"type": "signed_up", "lead": {"email": f"lead{number}@example.com"}}
        with transaction(runtime.database) as session:
            ingest(session, runtime.engine, EventIn.model_validate(payload), datetime.now(UTC))
    runtime.database.dispose()
    emails = 2 * args.leads
    restarted = False
    deadline = time.monotonic() + args.settle
    while time.monotonic() < deadline:
        arrived = sink.stats().count
        if arrived >= int(emails * 0.9):
            break  # the rest finish in peace
        time.sleep(rng.uniform(0.3, 2.0))
        victim = rng.choice(workers)
        os.killpg(processes.running[victim].pid, signal.SIGKILL)
        processes.running[victim].wait(timeout=10)
        counted.kills += 1
        processes.start(victim, worker_argv)
        if not restarted and arrived >= emails // 2:
            counted.restarted_servers_at = arrived
            console.print(f"{arrived} emails at the sink: restarting Redis empty and PostgreSQL")
            redis_server.restart_empty()
            restart_postgres(database_url)
            restarted = True
        keep_running(processes, workers, worker_argv)
    console.print(f"{counted.kills} kills; letting the sweeper and the workers finish …")
    while time.monotonic() < deadline and not settled(database):
        keep_running(processes, workers, worker_argv)
        time.sleep(0.5)
    counted.seconds = time.monotonic() - began


def keep_running(processes: Processes, workers: list[str], worker_argv: list[str]) -> None:
    """Start again a process that exited on its own (beat losing Redis, say)."""
    for name, process in list(processes.running.items()):
        if process.poll() is not None:
            argv = worker_argv if name in workers else [*NURTURE, "beat"]
            processes.start(name, argv)


def settled(database: Engine) -> bool:
    with database.connect() as connection:
        busy = connection.execute(
            text(
                "SELECT count(*) FROM step_runs WHERE status IN ('queued', 'claimed', 'sending') "
                "OR (status = 'pending' AND due_at IS NOT NULL)"
            )
        ).scalar_one()
    return int(busy) == 0


def count_rows(counted: Counted, database: Engine) -> None:
    with database.connect() as connection:
        rows = connection.execute(
            text("SELECT id, status, due_at FROM step_runs ORDER BY lead_id, position")
        ).all()
        counted.message_rows_twice = int(
            connection.execute(
                text(
                    "SELECT count(*) FROM (SELECT step_run_id FROM messages "
                    "GROUP BY step_run_id HAVING count(*) > 1) AS twice"
                )
            ).scalar_one()
        )
    for step_run_id, status, due_at in rows:
        counted.statuses[str(status)] += 1
        if status == "sent":
            counted.sent_ids.add(str(step_run_id))
        if status == "pending" and due_at is None:
            counted.waiting_on_unknown += 1
        elif status not in ("sent", "unknown"):
            counted.missing.append(f"{step_run_id} {status}")


def report(args: argparse.Namespace, c: Counted) -> int:
    killed = c.kills * args.concurrency
    unknown = c.statuses.get("unknown", 0)
    twice = sum(1 for times in c.sink.values() if times > 1)
    sent = c.statuses.get("sent", 0)
    table = Table(title=f"faults: {c.leads:,} leads × 2 emails, Redis + PostgreSQL, "
                  f"{args.workers} worker(s) × {args.concurrency}, seed {args.seed}")  # fmt: skip
    table.add_column("count")
    table.add_column("value", justify="right")
    table.add_row("workers killed -9 (pool processes killed)", f"{c.kills} ({killed})")
    table.add_row("Redis restarted empty and PostgreSQL restarted at", f"{c.restarted_servers_at} "
                  "emails at the sink")  # fmt: skip
    table.add_row("seconds from the first event to settled", f"{c.seconds:,.1f}")
    table.add_row("messages at the sink / distinct step runs", f"{sum(c.sink.values()):,} / "
                  f"{len(c.sink):,}")  # fmt: skip
    ok_twice = twice == 0 and c.message_rows_twice == 0
    table.add_row("[b]step runs at the sink twice (must be 0)",
                  f"[b]{twice}" + ("" if ok_twice else " [red]broken"))  # fmt: skip
    table.add_row("step runs with two message rows", str(c.message_rows_twice))
    table.add_row("step runs: sent", f"{sent:,}")
    ok_unknown = unknown <= killed
    table.add_row(f"[b]step runs: unknown (bound: ≤ {killed} pool processes killed)",
                  f"[b]{unknown}" + ("" if ok_unknown else " [red]broken"))  # fmt: skip
    table.add_row("step runs waiting on an unknown one (their `after:` never starts)",
                  str(c.waiting_on_unknown))  # fmt: skip
    not_at_sink = c.sent_ids - set(c.sink)
    table.add_row("step runs recorded sent that the sink never saw (must be 0)",
                  str(len(not_at_sink)))  # fmt: skip
    ok_rest = not c.missing and not not_at_sink
    ok_rest = ok_rest and sent + unknown + c.waiting_on_unknown == 2 * c.leads
    table.add_row("[b]every other step sent exactly once",
                  "[b][green]yes" if ok_rest and ok_twice else "[b][red]NO")  # fmt: skip
    console.print(table)
    for line in c.missing[:20]:
        console.print(f"[red]not finished:[/] {line}")
    return 0 if ok_twice and ok_unknown and ok_rest else 1


if __name__ == "__main__":
    run_main(main)
