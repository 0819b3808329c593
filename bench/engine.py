"""Benchmark: drive simulated leads through the sample sequences with the production engine.

Prints decisions per second (timeline entries: enroll, send, skip, exit, …), peak memory with
every lead's final state kept, and the ratio against a baseline measured in the same run: a bare
event loop that schedules the same number of timers with no rules at all (heap + datetime
arithmetic), i.e. the floor any scheduler in Python pays.

    .venv/bin/python bench/engine.py                # 100,000 leads
    .venv/bin/python bench/engine.py --leads 5000   # a quick look

Not part of the test run.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import random
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from worker.authoring.simulate import Simulation  # noqa: E402
from worker.definitions.catalog import load_catalog  # noqa: E402
from worker.engine.state import Event, Lead, LeadWorld  # noqa: E402

START = datetime(2026, 11, 16, 8, 0, tzinfo=UTC)
ZONES = ["Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC", "America/Sao_Paulo"]
HOUR = timedelta(hours=1)


def script(rng: random.Random) -> list[Event]:
    """A plausible month for one lead: signs up, maybe trials, browses, abandons carts, buys."""
    at = START + timedelta(minutes=rng.randrange(0, 7 * 24 * 60))
    events = [Event("signed_up", at)]
    if rng.random() < 0.6:
        at += timedelta(hours=rng.randrange(1, 48))
        events.append(Event("trial_started", at))
    for _ in range(rng.randrange(0, 4)):
        at += timedelta(hours=rng.randrange(1, 72))
        events.append(Event("pricing_page_viewed", at))
    if rng.random() < 0.4:
        cart = f"c{rng.randrange(1000)}"
        at += timedelta(hours=rng.randrange(1, 72))
        events.append(Event("checkout_started", at, {"cart_token": cart}))
        if rng.random() < 0.5:
            at += timedelta(hours=rng.randrange(1, 30))
            events.append(Event("order_placed", at, {"cart_token": cart}))
    if rng.random() < 0.3:
        starts = (at + timedelta(days=rng.randrange(2, 10))).isoformat()
        events.append(Event("webinar_registered", at, {"starts_at": starts}))
    if rng.random() < 0.2:
        at += timedelta(days=rng.randrange(1, 10))
        events.append(Event("webinar_attended", at))
    return events


def lead(number: int, rng: random.Random) -> Lead:
    return Lead(
        id=f"lead-{number}",
        email=f"lead{number}@example.com",
        phone="+4915112345678" if rng.random() < 0.5 else None,
        first_name="Ana",
        timezone=rng.choice(ZONES),
        consent={"sms": rng.random() < 0.5},
    )


def run_engine(count: int, seed: int) -> tuple[int, float, list[LeadWorld]]:
    catalog, problems = load_catalog(ROOT / "sequences", ROOT / "templates")
    if problems:
        raise SystemExit("\n".join(map(str, problems)))
    rng = random.Random(seed)
    worlds: list[LeadWorld] = []
    decisions = 0
    until = START + timedelta(days=45)
    began = time.perf_counter()
    with Progress(transient=True) as progress:
        task = progress.add_task("engine", total=count)
        for number in range(count):
            simulation = Simulation(catalog, LeadWorld(lead(number, rng)), until)
            decisions += len(simulation.run(script(rng), START, []))
            worlds.append(simulation.world)
            if number % 500 == 0:
                progress.update(task, completed=number)
    return decisions, time.perf_counter() - began, worlds


def run_baseline(decisions: int, seed: int) -> float:
    """The same number of timers through a bare heap: schedule, pop, add a day."""
    rng = random.Random(seed)
    heap: list[tuple[datetime, int]] = []
    began = time.perf_counter()
    for number in range(decisions):
        heapq.heappush(heap, (START + timedelta(minutes=rng.randrange(0, 60 * 24 * 30)), number))
        if len(heap) > 64:
            due, _ = heapq.heappop(heap)
            _ = due + HOUR * 24
    while heap:
        heapq.heappop(heap)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    gc.collect()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    decisions, seconds, worlds = run_engine(args.leads, args.seed)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    baseline = run_baseline(decisions, args.seed)
    per_second = decisions / seconds
    baseline_rate = decisions / baseline
    enrollments = sum(len(w.enrollments) for w in worlds)
    table = Table(title=f"engine: {args.leads:,} simulated leads, sample sequences, 45 days")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("decisions", f"{decisions:,}")
    table.add_row("enrollments", f"{enrollments:,}")
    table.add_row("engine time", f"{seconds:,.1f} s")
    table.add_row("decisions / s", f"{per_second:,.0f}")
    table.add_row("leads / s", f"{args.leads / seconds:,.0f}")
    table.add_row("baseline (bare heap) timers / s", f"{baseline_rate:,.0f}")
    table.add_row("engine / baseline throughput", f"{per_second / baseline_rate:.3f}")
    table.add_row("peak RSS (all lead states kept)", f"{rss_after:,.0f} MiB")
    table.add_row("RSS growth over the run", f"{rss_after - rss_before:,.0f} MiB")
    table.add_row("per lead", f"{(rss_after - rss_before) * 1024 / args.leads:,.1f} KiB")
    Console().print(table)


if __name__ == "__main__":
    main()
