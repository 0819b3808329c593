"""The table `bench/ingest.py` prints: rates, the ratios the goals name, CPU per event, and the
checks (rows written, nothing answered with an error, no connection dropped). Not a benchmark
itself."""

from __future__ import annotations

from dataclasses import dataclass, field

from _ingest_load import BATCH, Load
from rich.console import Console
from rich.table import Table

GOAL = 1000.0
"""/v1/events/batch, events/s."""
SINGLE_GOAL = 0.6
"""/v1/events over /v1/events/batch, same run."""
RAW_GOAL = 0.6
"""/v1/events/batch over raw writes of the same rows (a stretch)."""


@dataclass
class Early:
    """`Prefer: respond-async`: answered (queued) and applied (the intake empty again)."""

    load: Load
    applied_seconds: float = 0.0

    @property
    def applied_rate(self) -> float:
        return self.load.requests / self.applied_seconds if self.applied_seconds else 0.0


@dataclass
class Measured:
    events: int
    api_workers: int
    streams: int
    seed_seconds: float = 0.0
    batch_seconds: float = 0.0
    batch_errors: int = 0
    singles: list[Load] = field(default_factory=list)
    shopify: Load | None = None
    early: Early | None = None
    lone: list[float] = field(default_factory=list)
    """Seconds per request of a lone client (nothing else in flight)."""
    echo_seconds: float = 0.0
    raw_seconds: float = 0.0
    added: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    single_cpu: dict[str, float] = field(default_factory=dict)
    busy: float = 0.0
    others: float = 0.0
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def check(self, name: str, passed: bool, value: str) -> None:
        self.checks.append((name, passed, value))


def _verdict(value: float, goal: float) -> str:
    return f"[b]{value:.3f} {'[green]met' if value >= goal else '[red]missed'}"


def report(m: Measured, console: Console) -> int:
    batch_rate = m.events / m.batch_seconds
    echo_rate = m.events / m.echo_seconds
    raw_rate = m.events / m.raw_seconds
    table = Table(title=f"ingest: {m.events:,} events in batches of {BATCH:,} (half new "
                  "signups into a 4-step sequence, half pricing views), PostgreSQL, "
                  f"{m.api_workers} API worker(s), {m.streams} stream(s)")  # fmt: skip
    table.add_column("measure")
    table.add_column("value", justify="right")
    add = table.add_row
    add("warm-up: leads seeded through the batch endpoint",
        f"{m.events // 2:,} in {m.seed_seconds:,.1f} s")  # fmt: skip
    verdict = "[green]met" if batch_rate >= GOAL else "[red]missed"
    add(f"[b]/v1/events/batch, events / s (goal ≥ {GOAL:,.0f})", f"[b]{batch_rate:,.0f} {verdict}")
    add("  time per batch of 1,000", f"{m.batch_seconds / (m.events / BATCH):,.2f} s")
    for load in m.singles:
        add(f"[b]/v1/events, events / s ({load.clients} clients, {load.requests:,} events)",
            f"[b]{load.rate:,.0f}")  # fmt: skip
        add(f"[b]  single / batch ({load.clients} clients; goal ≥ {SINGLE_GOAL})",
            _verdict(load.rate / batch_rate, SINGLE_GOAL))  # fmt: skip
        add("  answers other than 200/202; connections dropped",
            f"{load.failed - load.dropped:,}; {load.dropped:,}")  # fmt: skip
    if m.lone:
        lone = sorted(m.lone)
        median, p95 = lone[len(lone) // 2] * 1000, lone[int(len(lone) * 0.95)] * 1000
        add(f"  a lone client's /v1/events, ms: median, 95th percentile ({len(lone)} requests)",
            f"{median:.1f}, {p95:.1f}")  # fmt: skip
    if m.shopify is not None:
        s = m.shopify
        add(f"[b]/v1/webhooks/shopify (signed checkouts), events / s ({s.clients} clients)",
            f"[b]{s.rate:,.0f}")  # fmt: skip
        add("  shopify / batch", f"{s.rate / batch_rate:.3f}")
    if m.early is not None:
        e = m.early
        add(f"[b]Prefer: respond-async, answered / s ({e.load.clients} clients, "
            f"{e.load.requests:,} events)", f"[b]{e.load.rate:,.0f}")  # fmt: skip
        add("[b]  … applied / s (until the intake is empty)", f"[b]{e.applied_rate:,.0f}")
    add("[b]baseline: raw psycopg executemany of the same rows, events / s", f"[b]{raw_rate:,.0f}")
    add("[b]baseline: empty FastAPI endpoint, same bodies, events / s", f"[b]{echo_rate:,.0f}")
    add(f"[b]batch / raw writes (stretch ≥ {RAW_GOAL})", _verdict(batch_rate / raw_rate, RAW_GOAL))
    add("[b]batch / empty endpoint", f"[b]{batch_rate / echo_rate:.3f}")
    add("rows added by the batches", ", ".join(f"{k} {v:,}" for k, v in m.added.items()))
    add("machine CPU busy during the batches (2 cores = 100%)", f"{m.busy:.0%}")
    for name, seconds in sorted(m.cpu.items(), key=lambda kv: -kv[1]):
        add(f"  CPU {name} (batches)", f"{seconds:,.1f} s ({seconds * 1000 / m.events:,.2f} "
            "ms/event)")  # fmt: skip
    add("  CPU other processes on the machine", f"{m.others:,.1f} s")
    if m.singles:
        first = m.singles[0]
        for name, seconds in sorted(m.single_cpu.items(), key=lambda kv: -kv[1]):
            add(f"  CPU {name} (singles, {first.clients} clients)",
                f"{seconds:,.1f} s ({seconds * 1000 / first.requests:,.2f} ms/event)")  # fmt: skip
    ok = True
    for name, passed, value in m.checks:
        ok = ok and passed
        add(f"check: {name}", f"{value} {'[green]ok' if passed else '[red]NO'}")
    console.print(table)
    singles = ", ".join(
        f"single {s.rate:,.0f} ({s.clients} clients, {s.rate / batch_rate:.3f} of batch)"
        for s in m.singles
    )
    console.print(
        f"ingest ({m.api_workers} API worker(s), {m.streams} stream(s)): "
        f"batch {batch_rate:,.0f} events/s, {singles}; raw writes {raw_rate:,.0f}, "
        f"empty endpoint {echo_rate:,.0f}; batch/raw {batch_rate / raw_rate:.3f}"
        + (f"; shopify {m.shopify.rate:,.0f}" if m.shopify else "")
        + (
            f"; respond-async answered {m.early.load.rate:,.0f}, applied "
            f"{m.early.applied_rate:,.0f}"
            if m.early
            else ""
        )
    )
    return 0 if ok else 1
