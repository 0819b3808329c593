"""`nurture event` and `nurture lead show|pause|resume|exit`: one lead, as a form or store
posts an event for it and as support looks it up and holds it."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from worker.cli.common import fail, out, runtime

if TYPE_CHECKING:
    from worker.runtime.process import Runtime

app = typer.Typer()
lead_app = typer.Typer(help="Support: look up, pause, resume or exit a lead.", no_args_is_help=True)


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
    from pydantic import ValidationError

    from worker.ingest.intake import apply
    from worker.ingest.schemas import EventIn

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
    result = apply(runtime(), event_in, source="cli")
    out.print(json.dumps(result.__dict__), markup=False)


def _lead_id(found: Runtime, email: str) -> str:
    from worker.kit.errors import NotFound
    from worker.support.service import lead_id_by_email

    try:
        return lead_id_by_email(found, email)
    except NotFound as exc:
        fail(str(exc))


@lead_app.command("show")
def lead_show(email: str) -> None:
    """Everything support needs: consent, score, enrollments and their steps."""
    from worker.support.view import lead_view

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
    pause_lead(
        found, _lead_id(found, email), sequence=sequence, reason=reason, until=end, actor="cli"
    )
    out.print(f"paused {email}" + (f" in {sequence}" if sequence else ""))


@lead_app.command("resume")
def lead_resume(
    email: str, sequence: Annotated[str | None, typer.Option(help="Only this sequence.")] = None
) -> None:
    """Resume; remaining steps move by the time spent paused."""
    from worker.support.service import resume_lead

    found = runtime()
    resume_lead(found, _lead_id(found, email), sequence=sequence, actor="cli")
    out.print(f"resumed {email}")


@lead_app.command("exit")
def lead_exit(
    email: str,
    sequence: Annotated[
        str | None, typer.Option(help="The sequence to leave (default: every one).")
    ] = None,
    reason: Annotated[str, typer.Option()] = "manual",
) -> None:
    """End the lead's enrollment in a sequence, or in every sequence."""
    from worker.support.service import exit_lead

    found = runtime()
    outcome = exit_lead(found, _lead_id(found, email), sequence, reason, actor="cli")
    if not outcome.exited:
        fail(f"{email} is not enrolled in {sequence or 'any sequence'}")
    out.print(f"{email} left {', '.join(sorted(set(outcome.exited)))}")
