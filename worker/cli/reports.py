"""`nurture stats` and `nurture diff`: how the deployed sequences do, and what deploying the
files would do to the enrollments in flight."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from worker.cli.common import fail, out, runtime

if TYPE_CHECKING:
    from worker.authoring.diff import SequenceChange

app = typer.Typer()


@app.command()
def stats(
    sequence: Annotated[
        str | None,
        typer.Argument(
            help="One sequence's funnel; `backfill` rebuilds the counters from the stored rows."
        ),
    ] = None,
) -> None:
    """The funnel per step and variant (or one line per sequence). `nurture stats backfill`
    fills the outcome counters from the history stored (once, after upgrading; running it
    again gives the same counts)."""
    from worker.cli.stats import backfill_line, stats_table
    from worker.stats.service import UnknownSequence

    if sequence == "backfill":
        out.print(backfill_line(runtime()))
        return
    try:
        out.print(stats_table(runtime(), sequence))
    except UnknownSequence as exc:
        fail(str(exc))


@app.command("diff")
def diff_command(
    revision: Annotated[
        str | None, typer.Argument(help="Compare with the files at this git revision.")
    ] = None,
) -> None:
    """What deploying the working tree would do to enrollments in flight (default: compared
    with the versions deployed now)."""
    from worker.authoring.diff import DiffError, diff

    try:
        changes = diff(runtime(), revision)
    except DiffError as exc:
        fail(str(exc))
    if not changes:
        out.print("no sequence changes")
        return
    out.print(changes_table(changes, revision))


def changes_table(changes: list[SequenceChange], revision: str | None) -> Table:
    table = Table(title="Sequence changes" + (f" since {revision}" if revision else ""))
    for column in ("sequence", "change", "steps", "in flight", "retime", "skip", "remove"):
        table.add_column(column)
    for change in changes:
        steps = ", ".join(
            part
            for part in (
                change.added and "+" + " +".join(change.added),
                change.removed and "-" + " -".join(change.removed),
                change.retimed and "~" + " ~".join(change.retimed),
            )
            if part
        )
        effect = change.effect
        held = change.state == "removed"
        table.add_row(
            change.sequence,
            change.state + (" (held until retired)" if held else ""),
            steps,
            str(change.in_flight),
            str(effect.retimed),
            str(effect.skipped),
            str(effect.removed),
        )
    return table
