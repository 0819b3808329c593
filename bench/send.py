"""Benchmark: N steps due at the same moment, sent end to end on Redis + PostgreSQL.

Real `nurture worker` processes and one `nurture beat` take every due step through the
dispatcher, the broker, the claim, the hand-over, SMTP to an aiosmtpd sink and the record.
Throughput is messages accepted by the sink per second, from the moment the steps fall due to
the last one accepted. The baseline, measured in the same run against the same sink: one raw
smtplib client sending as many equivalent messages (same size, multipart/alternative, built
one by one) over one reused connection. Goal: system / baseline >= 0.6. Then it checks that
every step was sent exactly once: as many distinct `X-Nurture-Step-Run` headers at the sink as
steps, no message twice, every row `sent`.

    .venv/bin/python bench/send.py                  # 100,000 steps
    .venv/bin/python bench/send.py --steps 2000     # a quick look

Not part of the test run. Needs PostgreSQL and Redis binaries (scripts/install-test-servers).
"""

from __future__ import annotations

import argparse
import email
import os
import re
import shutil
import smtplib
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

from _data import (
    FAR_FUTURE,
    clones,
    insert_core,
    prepare,
    scalar,
    statuses,
    vacuum_analyze,
    write_project,
)
from _servers import (
    NURTURE,
    Processes,
    Sink,
    busy_share,
    machine_cpu,
    nurture_env,
    pids_with,
    run_main,
    tree_cpu_seconds,
    tree_rss_kib,
    wait_until_idle,
    wide_console,
)
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from tests.servers.databases import postgres, redis

GOAL = 0.6
TASK = re.compile(r"Task step\.send_batch\[[^\]]+\] succeeded in ([0-9.e-]+)s: '([^']*)'")
TALLY = re.compile(r"(\d+) ([^,]+)")
console = wide_console()


@dataclass
class Measured:
    steps: int
    insert_seconds: float = 0.0
    first_after: float = 0.0
    sink_seconds: float = 0.0
    db_seconds: float = 0.0
    sink_count: int = 0
    distinct: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    messages_rows: int = 0
    mean_size: float = 0.0
    tasks: Counter[str] = field(default_factory=Counter)
    task_seconds: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    busy: float = 0.0
    others: float = 0.0
    peak_rss_mib: float = 0.0
    baseline_seconds: float = 0.0
    baseline_distinct: int = 0
    baseline_size: float = 0.0
    baseline_busy: float = 0.0
    baseline_others: float = 0.0


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2, help="nurture worker processes")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork children each")
    parser.add_argument("--interval", type=float, default=0.2, help="NURTURE_DISPATCH_INTERVAL")
    parser.add_argument("--batch", type=int, default=1000, help="NURTURE_DISPATCH_BATCH: "
                        "steps leased per tick, and at most in flight")  # fmt: skip
    parser.add_argument("--send-batch", type=int, default=20, help="NURTURE_SEND_BATCH: "
                        "steps per send task")  # fmt: skip
    parser.add_argument("--lease", type=float, default=60.0, help="NURTURE_LEASE_SECONDS")
    parser.add_argument("--stall", type=float, default=120.0, help="give up after this long "
                        "without a new message at the sink")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the folder with the logs")
    parser.add_argument("--wait-idle", type=float, default=300.0, help="wait up to this long for "
                        "other processes to leave the machine idle")  # fmt: skip
    return parser.parse_args()


def main() -> int:
    args = arguments()
    folder = Path(tempfile.mkdtemp(prefix="nurture-bench-send-"))
    try:
        measured = run(args, folder)
    finally:
        if args.keep:
            console.print(f"logs kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return report(args, measured)


def run(args: argparse.Namespace, folder: Path) -> Measured:
    measured = Measured(args.steps)
    write_project(folder)
    (folder / "redis").mkdir()
    with postgres() as database_url, redis(folder / "redis") as broker_url, Sink() as sink:
        wait_until_idle(console, args.wait_idle)
        console.print(f"preparing {args.steps:,} steps …")
        template = prepare(folder, database_url)
        began = time.perf_counter()
        insert_core(database_url, clones(template, args.steps, lambda _: FAR_FUTURE, "bench"))
        measured.insert_seconds = time.perf_counter() - began
        vacuum_analyze(database_url)
        env = nurture_env(
            folder, database_url, broker_url, sink.port,
            NURTURE_DISPATCH_INTERVAL=str(args.interval),
            NURTURE_DISPATCH_BATCH=str(args.batch),
            NURTURE_SEND_BATCH=str(args.send_batch),
            NURTURE_LEASE_SECONDS=str(args.lease),
        )  # fmt: skip
        database = create_engine(database_url)
        try:
            with Processes(folder, env) as processes:
                send_all(args, measured, processes, sink, database, database_url, broker_url)
            measured.statuses = statuses(database)
            measured.messages_rows = int(scalar(database, "SELECT count(*) FROM messages"))
        finally:
            database.dispose()
        for line in TASK.finditer("".join(processes.log(f"worker-{n}") for n in
                                          range(args.workers))):  # fmt: skip
            measured.task_seconds.append(float(line.group(1)))
            for count, what in TALLY.findall(line.group(2)):
                measured.tasks[what] += int(count)
        ids = sink.ids()
        measured.sink_count, measured.distinct = len(ids), len(set(ids))
        stats = sink.stats()
        measured.mean_size = stats.total_bytes / max(1, stats.count)
        sample = sink.sample()
        sink.reset()
        console.print(f"baseline: {args.steps:,} messages through one smtplib connection …")
        wait_until_idle(console, args.wait_idle)
        before, sink_before, own_before = machine_cpu(), sink.cpu_seconds(), own_cpu()
        measured.baseline_seconds = baseline(sink.port, sample, args.steps)
        after = machine_cpu()
        measured.baseline_busy = busy_share(before, after)
        mine = sink.cpu_seconds() - sink_before + own_cpu() - own_before
        measured.baseline_others = max(0.0, after[0] - before[0] - mine)
        ids = sink.ids()
        measured.baseline_distinct = len(set(ids)) if len(ids) == args.steps else -len(ids)
        stats = sink.stats()
        measured.baseline_size = stats.total_bytes / max(1, stats.count)
    return measured


def send_all(
    args: argparse.Namespace,
    measured: Measured,
    processes: Processes,
    sink: Sink,
    database: Engine,
    database_url: str,
    broker_url: str,
) -> None:
    workers = [f"worker-{n}" for n in range(args.workers)]
    for name in workers:
        processes.start(name, [*NURTURE, "worker", "--concurrency", str(args.concurrency)])
    processes.start("beat", [*NURTURE, "beat"])
    for name in workers:
        processes.wait_for_log(name, " ready.")
    processes.wait_for_log("beat", "beat: Starting")
    servers = {
        "postgres": pids_with(f"-p {make_url(database_url).port} "),
        "redis": pids_with(f"127.0.0.1:{make_url(broker_url).port}"),
    }

    def cpu_now() -> dict[str, float]:
        found = {name: tree_cpu_seconds(processes.running[name].pid)
                 for name in [*workers, "beat"]}  # fmt: skip
        for name, pids in servers.items():
            found[name] = sum(tree_cpu_seconds(pid) for pid in pids)
        found["smtp sink"] = sink.cpu_seconds()
        return found

    time.sleep(2)  # let every prefork child connect and idle
    # far enough ahead for the UPDATE to commit first; if it does not, time from the commit
    due = datetime.now(UTC) + timedelta(seconds=2 + args.steps / 10_000)
    with database.begin() as connection:
        connection.execute(
            text("UPDATE step_runs SET due_at = :due, nominal_at = :due WHERE status = 'pending'"),
            {"due": due},
        )
    start = max(due.timestamp(), time.time())
    time.sleep(max(0.0, start - time.time()))
    cpu_before, machine_before = cpu_now(), machine_cpu()
    stalled_since, last_count = time.monotonic(), 0
    columns = (TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task("send", total=args.steps)
        while True:
            stats = sink.stats()
            progress.update(bar, completed=stats.count)
            rss = sum(tree_rss_kib(processes.running[name].pid) for name in workers)
            measured.peak_rss_mib = max(measured.peak_rss_mib, rss / 1024)
            if stats.count >= args.steps:
                break
            processes.check()
            if stats.count != last_count:
                stalled_since, last_count = time.monotonic(), stats.count
            elif time.monotonic() - stalled_since > args.stall:
                raise RuntimeError(
                    f"no new message for {args.stall:.0f} s ({stats.count:,} of {args.steps:,}); "
                    f"rows: {statuses(database)}"
                )
            time.sleep(0.5)
    measured.first_after = stats.first - start
    measured.sink_seconds = stats.last - start
    deadline = time.monotonic() + 120
    while statuses(database).get("sent", 0) < args.steps and time.monotonic() < deadline:
        time.sleep(0.2)
    measured.db_seconds = time.time() - start
    cpu_after, machine_after = cpu_now(), machine_cpu()
    measured.busy = busy_share(machine_before, machine_after)
    measured.cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
    mine = sum(measured.cpu.values())
    measured.others = max(0.0, machine_after[0] - machine_before[0] - mine)


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def baseline(port: int, sample: bytes, count: int) -> float:
    """One smtplib client, one connection, `count` messages like the sample, each built anew."""
    parsed = email.message_from_bytes(sample, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    plain = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    text_part = plain.get_content() if plain is not None else " "
    html_part = html.get_content() if html is not None else "<p></p>"
    copied = ["From", "To", "Subject", "List-Unsubscribe", "List-Unsubscribe-Post"]
    headers = {name: str(parsed[name]) for name in copied if parsed[name] is not None}
    began = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as client:
        for number in range(count):
            message = EmailMessage(policy=policy.SMTP.clone(max_line_length=998))
            for name, value in headers.items():
                message[name] = value
            message["Date"] = formatdate(usegmt=True)
            message["Message-ID"] = f"<baseline-{number}@bench>"
            message["X-Nurture-Step-Run"] = f"baseline-{number:026d}"
            message.set_content(text_part)
            message.add_alternative(html_part, subtype="html")
            client.send_message(message)
    return time.perf_counter() - began


def report(args: argparse.Namespace, m: Measured) -> int:
    rate = m.steps / m.sink_seconds
    base_rate = m.steps / m.baseline_seconds
    ratio = rate / base_rate
    once = m.sink_count == m.distinct == m.steps and m.statuses == {"sent": m.steps}
    once = once and m.messages_rows == m.steps
    table = Table(title=f"send: {m.steps:,} steps due at once, Redis + PostgreSQL, "
                  f"{args.workers} worker(s) × {args.concurrency} + beat")  # fmt: skip
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row(
        "bulk insert (leads, enrollments, step runs)",
        f"{m.insert_seconds:,.1f} s ({m.steps / m.insert_seconds:,.0f} leads/s)",
    )
    table.add_row("first message accepted after due", f"{m.first_after:,.2f} s")
    table.add_row("last message accepted after due", f"{m.sink_seconds:,.1f} s")
    table.add_row("every row recorded `sent` after due", f"{m.db_seconds:,.1f} s")
    table.add_row("[b]Nurture end to end, messages / s", f"[b]{rate:,.0f}")
    table.add_row("[b]baseline: raw smtplib, one connection, messages / s", f"[b]{base_rate:,.0f}")
    verdict = "[green]met" if ratio >= GOAL else "[red]missed"
    table.add_row(f"[b]Nurture / baseline (goal ≥ {GOAL})", f"[b]{ratio:.3f} {verdict}")
    table.add_row("mean message size: Nurture / baseline",
                  f"{m.mean_size:,.0f} B / {m.baseline_size:,.0f} B")  # fmt: skip
    table.add_row("messages at the sink / distinct step runs",
                  f"{m.sink_count:,} / {m.distinct:,}")  # fmt: skip
    table.add_row("step_runs by status", ", ".join(f"{k} {v:,}" for k, v in m.statuses.items()))
    table.add_row("rows in messages", f"{m.messages_rows:,}")
    once_text = "[green]yes" if once else "[red]NO"
    table.add_row("[b]every step sent exactly once", f"[b]{once_text}")
    tasks = ", ".join(f"{k} {v:,}" for k, v in m.tasks.most_common())
    table.add_row("steps by task result", tasks or "(none logged)")
    if m.task_seconds:
        table.add_row(
            "step.send_batch task time: median / p99",
            f"{statistics.median(m.task_seconds) * 1000:,.1f} ms / "
            f"{sorted(m.task_seconds)[int(len(m.task_seconds) * 0.99)] * 1000:,.1f} ms",
        )
    table.add_row("machine CPU busy while sending (2 cores = 100%)", f"{m.busy:.0%}")
    for name, seconds in sorted(m.cpu.items(), key=lambda kv: -kv[1]):
        table.add_row(f"  CPU {name}", f"{seconds:,.1f} s ({seconds * 1000 / m.steps:,.2f} ms/msg)")
    table.add_row("  CPU other processes on the machine (not this benchmark)",
                  f"{m.others:,.1f} s")  # fmt: skip
    table.add_row("peak RSS of all workers (with children)", f"{m.peak_rss_mib:,.0f} MiB")
    table.add_row("baseline: machine CPU busy", f"{m.baseline_busy:.0%}")
    table.add_row("baseline: CPU other processes on the machine", f"{m.baseline_others:,.1f} s")
    table.add_row("baseline: distinct messages at the sink", f"{m.baseline_distinct:,}")
    console.print(table)
    return 0 if once else 1


if __name__ == "__main__":
    run_main(main)
