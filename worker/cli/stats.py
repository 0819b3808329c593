"""`nurture stats [SEQUENCE]`: the funnel as a table, the same numbers as
`GET /v1/sequences/{id}/stats`. Without a sequence: one line per sequence."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from worker.runtime.process import Runtime
from worker.stats import service as stats
from worker.stats.upkeep import backfill

FUNNEL = ("scheduled", "sent", "delivered", "opened", "clicked", "replied", "failed")
AFTER = ("unsubscribed", "converted")


def stats_table(runtime: Runtime, sequence: str | None) -> Table:
    """The funnel of one sequence per step and variant, or every sequence in one line each.
    Raises stats.UnknownSequence for a sequence neither the files nor the database know."""
    if sequence is None:
        return _overview(runtime)
    return _funnel(stats.funnel(runtime, sequence))


def _variant(line: dict[str, Any]) -> str:
    return "" if line["variant"] is None else chr(ord("A") + line["variant"])


def _skipped(skipped: dict[str, int]) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items())) or "0"


def _funnel(found: dict[str, Any]) -> Table:
    enrollments = found["enrollments"]
    caption = (
        f"{enrollments['total']} enrolled: {enrollments['active']} active, "
        f"{enrollments['completed']} completed, {enrollments['exited']} exited"
    )
    if found["goal"]:
        goal = found["goal"]
        caption += (
            f"; {enrollments['converted']} converted ({goal['event']} within {goal['within']})"
        )
    title = found["sequence"] + (f": {found['name']}" if found["name"] else "")
    table = Table(title=title, caption=caption)
    table.add_column("Step")
    table.add_column("Variant")
    table.add_column("Channel")
    for name in (*FUNNEL, "unknown"):
        table.add_column(name.capitalize(), justify="right")
    table.add_column("Skipped")
    for name in AFTER:
        table.add_column(name.capitalize(), justify="right")
    for line in found["steps"]:
        table.add_row(
            line["step"],
            _variant(line),
            line["channel"] or "",
            *(str(line[name]) for name in (*FUNNEL, "unknown")),
            _skipped(line["skipped"]),
            *(str(line[name]) for name in AFTER),
        )
    return table


def _overview(runtime: Runtime) -> Table:
    table = Table(title="Sequences")
    table.add_column("Sequence")
    for name in ("Active", "Enrolled", "Sent", "Opened", "Clicked", "Replied", "Unsubscribed"):
        table.add_column(name, justify="right")
    table.add_column("Converted", justify="right")
    for described in stats.sequences(runtime):
        found = stats.funnel(runtime, described["id"])
        steps = found["steps"]
        total = {k: sum(s[k] for s in steps) for k in ("sent", "opened", "clicked", "replied")}
        table.add_row(
            described["id"],
            str(described["active_enrollments"]),
            str(found["enrollments"]["total"]),
            *(str(total[k]) for k in ("sent", "opened", "clicked", "replied")),
            str(sum(s["unsubscribed"] for s in steps)),
            str(found["enrollments"]["converted"]) if found["goal"] else "–",
        )
    return table


def backfill_line(runtime: Runtime) -> str:
    """Rebuild the counters from the stored rows and say what was written."""
    rebuilt = backfill(runtime)
    return (
        f"outcome counters rebuilt from the stored rows: {rebuilt.rows} counter row(s), "
        f"{rebuilt.marks} once-per-message mark(s)"
    )
