"""`nurture sequences|sends|crm|inbox …`: what operators run on a live installation — deploy,
hold and retire sequences, the incident switch, the CRM's properties, the reply mailbox."""

from __future__ import annotations

from typing import Annotated

import typer

from worker.cli.common import fail, out, runtime
from worker.config import settings

sequences_app = typer.Typer(help="Deploy, hold and retire sequences.", no_args_is_help=True)
sends_app = typer.Typer(help="The incident switch: hold every send.", no_args_is_help=True)
inbox_app = typer.Typer(help="The reply mailbox: replies, bounces.", no_args_is_help=True)
crm_app = typer.Typer(help="The CRM: HubSpot's custom contact properties.", no_args_is_help=True)


def _switch(name: str, value: str, reason: str | None) -> None:
    from worker.support.service import set_switch

    set_switch(runtime(), name, value, actor="cli", reason=reason)


Reason = Annotated[str | None, typer.Option(help="Why: kept in the audit log.")]


@sequences_app.command("reload")
def sequences_reload() -> None:
    """Validate the files (all or nothing) and move enrollments in flight to the new version."""
    from worker.support.deploy import deploy

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


@sequences_app.command("pause")
def sequences_pause(sequence_id: str, reason: Reason = None) -> None:
    """Hold every send of one sequence."""
    _switch(f"sequence:{sequence_id}", "paused", reason)
    out.print(f"{sequence_id}: paused")


@sequences_app.command("resume")
def sequences_resume(sequence_id: str, reason: Reason = None) -> None:
    _switch(f"sequence:{sequence_id}", "running", reason)
    out.print(f"{sequence_id}: running")


@sequences_app.command("retire")
def sequences_retire(sequence_id: str, reason: Reason = None) -> None:
    """End the enrollments of a sequence whose file was removed."""
    from worker.support.deploy import retire

    try:
        count = retire(runtime(), sequence_id, actor="cli", reason=reason)
    except ValueError as exc:
        fail(str(exc))
    out.print(f"{sequence_id}: {count} lead(s) retired")


@sends_app.command("pause")
def sends_pause(reason: Reason = None) -> None:
    """Hold every send everywhere; nothing is lost."""
    _switch("sends", "paused", reason)
    out.print("every send is held: `nurture sends resume` to let them go")


@sends_app.command("resume")
def sends_resume(reason: Reason = None) -> None:
    _switch("sends", "running", reason)
    out.print("sends resumed")


@crm_app.command("setup")
def crm_setup() -> None:
    """Create Nurture's contact properties (and their group) in HubSpot where missing."""
    from integrations.hubspot import HubSpotCrm
    from integrations.ports import ProviderError
    from worker.crm.properties import hubspot_setup

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


@inbox_app.command("watch")
def inbox_watch() -> None:
    """Keep reading the reply mailbox: wait with IDLE and handle a message within seconds of
    its arrival; where the server offers no IDLE, poll every NURTURE_INBOX_POLL_INTERVAL."""
    import threading

    from worker.inbox.service import InboxNotConfigured, Polled, watch

    def report(polled: Polled) -> None:
        if polled.read:
            out.print(polled.summary(), markup=False)

    stop = threading.Event()
    try:
        watch(runtime(), stop, report)
    except InboxNotConfigured as exc:
        fail(f"inbox: {exc}")
    except KeyboardInterrupt:
        out.print("stopped")
