"""`nurture`: the command line (SPEC §6), one Typer app made of the sub-apps beside it.
Each command is a thin shell over a service."""

from __future__ import annotations

import typer

from worker.cli import authoring, leads, operations, processes, reports, users

app = typer.Typer(
    name="nurture",
    help="Lead-nurture sequences as code.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# sub-apps without a name add their commands to the top level; `nurture --help` lists them in
# this order, then the groups
app.add_typer(authoring.app)  # validate, preview, simulate, test
app.add_typer(processes.app)  # run, api, worker, beat
app.add_typer(leads.app)  # event
app.add_typer(reports.app)  # stats, diff
app.add_typer(processes.db_app, name="db")
app.add_typer(leads.lead_app, name="lead")
app.add_typer(operations.sequences_app, name="sequences")
app.add_typer(operations.sends_app, name="sends")
app.add_typer(operations.inbox_app, name="inbox")
app.add_typer(operations.crm_app, name="crm")
app.add_typer(users.users_app, name="users")


def main() -> None:  # pragma: no cover
    app()
