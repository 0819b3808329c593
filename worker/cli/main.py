"""`nurture`: the command line (SPEC §6). Each command is a thin shell over a service."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from worker.config import settings
from worker.definitions.catalog import Catalog, load_catalog
from worker.engine.state import Entry

app = typer.Typer(
    name="nurture",
    help="Lead-nurture sequences as code.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# piped or captured output is not a terminal: give tables room instead of wrapping at 80
out = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(message, markup=False)
    raise typer.Exit(code)


def folders(directory: Path | None) -> tuple[Path, Path]:
    """A project folder holds sequences/ and templates/; a sequences folder works too."""
    config = settings()
    if directory is None:
        return config.sequences_dir, config.templates_dir
    if (directory / "sequences").is_dir():
        return directory / "sequences", directory / "templates"
    return directory, directory.parent / "templates"


def load(directory: Path | None = None) -> Catalog:
    """The catalog, or every problem printed and exit 1."""
    sequences_dir, templates_dir = folders(directory)
    catalog, problems = load_catalog(sequences_dir, templates_dir)
    if problems:
        for problem in problems:
            err.print(str(problem), markup=False)
        fail(f"{len(problems)} problem(s): nothing was changed")
    return catalog


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


def read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"{path}: cannot read: {exc.strerror}")
    except json.JSONDecodeError as exc:
        fail(f"{path}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}")


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
    now = datetime.now(UTC).replace(microsecond=0)
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


# -- the runtime ----------------------------------------------------------------------------

db_app = typer.Typer(help="The database.", no_args_is_help=True)
lead_app = typer.Typer(help="Support: look up, pause, resume or exit a lead.", no_args_is_help=True)
sequences_app = typer.Typer(help="Deploy, hold and retire sequences.", no_args_is_help=True)
sends_app = typer.Typer(help="The incident switch: hold every send.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(lead_app, name="lead")
app.add_typer(sequences_app, name="sequences")
app.add_typer(sends_app, name="sends")
inbox_app = typer.Typer(help="The reply mailbox: replies, bounces.", no_args_is_help=True)
app.add_typer(inbox_app, name="inbox")


def runtime() -> Any:
    from worker.runtime.process import CatalogError, build

    try:
        return build()
    except CatalogError as exc:
        for problem in exc.problems:
            err.print(str(problem), markup=False)
        fail(f"{len(exc.problems)} problem(s) in the sequence files: fix them first")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Run the database migrations."""
    from worker.store.db import database_url
    from worker.store.migrate import upgrade

    upgrade(database_url(settings()))
    out.print("database is up to date")


@app.command()
def run(port: Annotated[int, typer.Option(help="HTTP port on 127.0.0.1.")] = 8000) -> None:
    """API, worker and beat in one process, on the embedded defaults; no setup needed."""
    import os

    from worker.processes import prepare_home, run_all
    from worker.support.service import deploy

    # links in messages (unsubscribe, tracking) must point at this server unless told otherwise
    os.environ.setdefault("NURTURE_PUBLIC_URL", f"http://127.0.0.1:{port}")
    settings.cache_clear()
    config = settings()
    token = prepare_home(config)
    deploy(runtime(), reload=False)
    if token:
        out.print(f"API token (NURTURE_API_TOKENS is unset): {token}", markup=False)
    out.print(f"Nurture on http://127.0.0.1:{port}; outbox: {config.outbox_dir.resolve()}")
    run_all(config, port)


@app.command()
def api(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, help="uvicorn worker processes (one per core in production)")
    ] = 1,
) -> None:
    """The HTTP API (production)."""
    from worker.processes import run_api

    runtime()
    run_api(host, port, workers)


@app.command()
def worker(concurrency: Annotated[int | None, typer.Option()] = None) -> None:
    """A Celery worker (production)."""
    from worker.processes import run_worker

    runtime()
    run_worker(concurrency)


@app.command()
def beat() -> None:
    """The scheduler: dispatches due steps every second (production: run exactly one)."""
    from worker.processes import run_beat

    run_beat(settings())


def parse_props(props: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in props:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--prop {item!r}: write key=value")
        try:
            found[key] = json.loads(value)
        except json.JSONDecodeError:
            found[key] = value
    return found


@app.command()
def event(
    type_: Annotated[str, typer.Argument(metavar="TYPE", help="Event type, like signed_up.")],
    email: Annotated[str | None, typer.Option(help="The lead's email.")] = None,
    phone: Annotated[str | None, typer.Option(help="The lead's phone (E.164).")] = None,
    external_id: Annotated[str | None, typer.Option()] = None,
    first_name: Annotated[str | None, typer.Option()] = None,
    timezone: Annotated[str | None, typer.Option()] = None,
    prop: Annotated[list[str] | None, typer.Option(help="A property, key=value.")] = None,
) -> None:
    """Post one event, as forms and stores do."""
    from datetime import UTC, datetime

    from pydantic import ValidationError

    from worker.ingest.schemas import EventIn
    from worker.ingest.service import ingest
    from worker.store.db import transaction

    lead = {
        "email": email,
        "phone": phone,
        "external_id": external_id,
        "first_name": first_name,
        "timezone": timezone,
    }
    payload = {
        "type": type_,
        "lead": {k: v for k, v in lead.items() if v},
        "properties": parse_props(prop or []),
    }
    try:
        event_in = EventIn.model_validate(payload)
    except ValidationError as exc:
        fail("\n".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    found = runtime()
    with transaction(found.database) as session:
        result = ingest(session, found.engine, event_in, datetime.now(UTC), source="cli")
    out.print(json.dumps(result.__dict__), markup=False)


def _lead_id(found: Any, email: str) -> str:
    from worker.kit.errors import NotFound
    from worker.support.service import lead_id_by_email

    try:
        return lead_id_by_email(found, email)
    except NotFound as exc:
        fail(str(exc))


@lead_app.command("show")
def lead_show(email: str) -> None:
    """Everything support needs: consent, score, enrollments and their steps."""
    from worker.support.service import lead_view

    found = runtime()
    view = lead_view(found, _lead_id(found, email))
    out.print_json(json.dumps(view, default=str))


@lead_app.command("pause")
def lead_pause(
    email: str,
    sequence: Annotated[str | None, typer.Option(help="Only this sequence.")] = None,
    reason: Annotated[str | None, typer.Option()] = None,
    until: Annotated[str | None, typer.Option(help="Resume by itself at this time (ISO).")] = None,
) -> None:
    """Hold every step of the lead (or of one sequence) until resumed."""
    from datetime import datetime

    from worker.support.service import pause_lead

    end = None
    if until:
        try:
            end = datetime.fromisoformat(until.replace("Z", "+00:00"))
        except ValueError:
            fail(f"--until {until!r}: write an ISO time like 2026-12-01T09:00:00Z")
        if end.tzinfo is None:
            fail("--until needs a time zone offset, like 2026-12-01T09:00:00Z")
    found = runtime()
    pause_lead(found, _lead_id(found, email), sequence=sequence, reason=reason, until=end, by="cli")
    out.print(f"paused {email}" + (f" in {sequence}" if sequence else ""))


@lead_app.command("resume")
def lead_resume(
    email: str, sequence: Annotated[str | None, typer.Option(help="Only this sequence.")] = None
) -> None:
    """Resume; remaining steps move by the time spent paused."""
    from worker.support.service import resume_lead

    found = runtime()
    resume_lead(found, _lead_id(found, email), sequence=sequence)
    out.print(f"resumed {email}")


@lead_app.command("exit")
def lead_exit(
    email: str,
    sequence: Annotated[str, typer.Option(help="The sequence to leave.")],
    reason: Annotated[str, typer.Option()] = "manual",
) -> None:
    """End the lead's enrollment in a sequence."""
    from worker.support.service import exit_lead

    found = runtime()
    outcome = exit_lead(found, _lead_id(found, email), sequence, reason)
    if not outcome.exited:
        fail(f"{email} is not enrolled in {sequence}")
    out.print(f"{email} left {sequence}")


@sequences_app.command("reload")
def sequences_reload() -> None:
    """Validate the files (all or nothing) and move enrollments in flight to the new version."""
    from worker.support.service import deploy

    found = runtime()
    deployed = deploy(found)
    for sequence_id, migration in deployed.changed.items():
        out.print(
            f"{sequence_id}: retimed {migration.retimed}, skipped {migration.skipped}, "
            f"removed {migration.removed}, added {migration.added}"
        )
    for sequence_id in deployed.removed:
        out.print(
            f"{sequence_id}: file removed; its enrollments are held until it returns or "
            f"`nurture sequences retire {sequence_id}`"
        )
    out.print(f"ok: {len(found.catalog.sequences)} sequence(s) loaded")


@app.command()
def stats(
    sequence: Annotated[str | None, typer.Argument(help="One sequence's funnel.")] = None,
) -> None:
    """The funnel per step and variant (or one line per sequence)."""
    from worker.cli.stats import stats_table
    from worker.stats.service import UnknownSequence

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
    out.print(table)


def _switch(name: str, value: str) -> None:
    from worker.support.service import set_switch

    set_switch(runtime(), name, value, by="cli")


@sequences_app.command("pause")
def sequences_pause(sequence_id: str) -> None:
    """Hold every send of one sequence."""
    _switch(f"sequence:{sequence_id}", "paused")
    out.print(f"{sequence_id}: paused")


@sequences_app.command("resume")
def sequences_resume(sequence_id: str) -> None:
    _switch(f"sequence:{sequence_id}", "running")
    out.print(f"{sequence_id}: running")


@sequences_app.command("retire")
def sequences_retire(sequence_id: str) -> None:
    """End the enrollments of a sequence whose file was removed."""
    from worker.support.service import retire

    try:
        count = retire(runtime(), sequence_id)
    except ValueError as exc:
        fail(str(exc))
    out.print(f"{sequence_id}: {count} lead(s) retired")


@sends_app.command("pause")
def sends_pause() -> None:
    """Hold every send everywhere; nothing is lost."""
    _switch("sends", "paused")
    out.print("every send is held: `nurture sends resume` to let them go")


@sends_app.command("resume")
def sends_resume() -> None:
    _switch("sends", "running")
    out.print("sends resumed")


crm_app = typer.Typer(help="The CRM: HubSpot's custom contact properties.", no_args_is_help=True)
app.add_typer(crm_app, name="crm")


@crm_app.command("setup")
def crm_setup() -> None:
    """Create Nurture's contact properties (and their group) in HubSpot where missing."""
    from integrations.hubspot import HubSpotCrm
    from integrations.ports import ProviderError
    from worker.crm.service import hubspot_setup

    try:
        created = hubspot_setup(HubSpotCrm.from_settings(settings()))
    except ValueError as exc:
        fail(str(exc))
    except ProviderError as exc:
        fail(f"HubSpot refused: {exc}")
    for name in created:
        out.print(f"created {name}")
    out.print("HubSpot has every Nurture property" + ("" if created else " already"))


@inbox_app.command("poll")
def inbox_poll() -> None:
    """Read the reply mailbox once: replies, auto-replies, bounces and complaints."""
    from integrations.imap import ImapError
    from worker.inbox.service import InboxNotConfigured, poll

    try:
        polled = poll(runtime())
    except (InboxNotConfigured, ImapError) as exc:
        fail(f"inbox: {exc}")
    out.print(polled.summary(), markup=False)


def main() -> None:  # pragma: no cover
    app()
