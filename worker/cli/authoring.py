"""`nurture validate|preview|simulate|test`: what a marketer runs on the files, no database."""

from __future__ import annotations

import sys
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from worker.cli.common import fail, folders, load, out, read_json_file
from worker.config import settings
from worker.kit.clock import utcnow

if TYPE_CHECKING:
    from worker.engine.state import Entry

app = typer.Typer()


@app.command()
def validate(
    directory: Annotated[
        Path | None, typer.Argument(help="A project folder, or its sequences/ folder.")
    ] = None,
) -> None:
    """Check sequences, templates, scoring and policy; every error as file:line:column."""
    catalog = load(directory)
    if not catalog.sequences:
        fail(f"no sequence files in {folders(directory)[0]}: add sequences/<id>.yaml files")
    kinds = [f"{len(catalog.sequences)} sequence(s)"]
    if catalog.scoring is not None:
        kinds.append("scoring")
    kinds.append(f"{len(catalog.templates.names()) if catalog.templates else 0} template(s)")
    out.print(f"ok: {', '.join(kinds)} valid")


@app.command()
def preview(
    sequence: Annotated[str, typer.Argument(help="Sequence id.")],
    step: Annotated[str, typer.Argument(help="Step id (or a send: id under on:).")],
    lead: Annotated[Path | None, typer.Option(help="A JSON lead, as in POST /v1/events.")] = None,
    send_to: Annotated[
        str | None,
        typer.Option(
            "--send-to",
            help="Also send it to this address (or phone number) through the configured provider.",
        ),
    ] = None,
) -> None:
    """Render one step for a sample or a given lead; optionally send a test message."""
    from integrations.ports import ProviderError
    from worker.authoring.preview import preview_step, send_preview

    catalog = load()
    lead_data = read_json_file(lead) if lead else None
    try:
        text = preview_step(catalog, sequence, step, lead_data)
    except ValueError as exc:
        fail(str(exc))
    out.print(text, markup=False)
    if send_to:
        try:
            sent = send_preview(settings(), catalog, sequence, step, lead_data, send_to)
        except (ValueError, ProviderError) as exc:
            fail(f"not sent: {exc}")
        for line in sent:
            out.print(f"sent: {line}", markup=False)


@app.command()
def simulate(
    sequences: Annotated[
        list[str] | None, typer.Argument(help="Sequences to enroll into (default: by events).")
    ] = None,
    lead: Annotated[Path, typer.Option(help="A JSON lead, as in POST /v1/events.")] = Path(
        "lead.json"
    ),
    events: Annotated[Path | None, typer.Option(help="JSON lines of events.")] = None,
    start: Annotated[
        str | None, typer.Option(help="Virtual start time (ISO; default now).")
    ] = None,
    until: Annotated[str, typer.Option(help="How long to run, like 30d.")] = "30d",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Run the engine on a virtual clock and print the lead's timeline."""
    from worker.authoring.simulate import (
        SimulationError,
        entry_json,
        parse_time,
        read_events,
        read_lead,
    )
    from worker.authoring.simulate import simulate as run_simulation

    catalog = load()
    now = utcnow().replace(microsecond=0)
    try:
        begin = parse_time(start, now) if start else now
        end = parse_time("+" + until.lstrip("+"), begin)
        found = read_lead(read_json_file(lead), str(lead))
        timeline = run_simulation(
            catalog,
            found,
            events=read_events(events, begin) if events else [],
            start=begin,
            until=end,
            sequences=sequences or None,
        )
    except (SimulationError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        for entry in timeline:
            sys.stdout.write(entry_json(entry) + "\n")
        return
    print_timeline(timeline, found.timezone)


def print_timeline(timeline: list[Entry], timezone: str | None) -> None:
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(timezone) if timezone else UTC
    table = Table(title="Timeline", show_lines=False)
    for column in ("when (UTC)", f"local ({zone})", "sequence", "step", "action", "detail"):
        table.add_column(column)
    for entry in timeline:
        detail = " ".join(
            part
            for part in (
                entry.channel,
                entry.subject and f"“{entry.subject}”",
                entry.reason and f"({entry.reason})",
            )
            if part
        )
        table.add_row(
            entry.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M"),
            entry.at.astimezone(zone).strftime("%a %d %b %H:%M"),
            entry.sequence or "",
            entry.step or "",
            entry.action,
            detail,
        )
    out.print(table)


@app.command("test")
def run_tests(
    directory: Annotated[
        Path | None, typer.Argument(help="Folder of sequence tests (default sequences/tests).")
    ] = None,
) -> None:
    """Run sequence tests: a lead, events and the expected sends, like unit tests."""
    from worker.authoring.sequence_tests import run_folder

    catalog = load()
    folder = directory or settings().sequences_dir / "tests"
    results = run_folder(catalog, folder)
    failed = [r for r in results if not r.passed]
    for result in results:
        mark = "[green]PASS[/green]" if result.passed else "[red]FAIL[/red]"
        out.print(f"{mark} {result.name}")
        for line in result.problems:
            out.print(f"    {line}", markup=False)
    if not results:
        fail(f"no sequence tests in {folder} (files named *.yaml)")
    out.print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed:
        raise typer.Exit(1)
