"""`nurture users add|list|remove|set-role|set-password`: the people who sign in to the console
and their roles. A password comes from standard input when it is not a terminal (one line),
else it is asked for twice without echo."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from worker.accounts.roles import Role
from worker.cli.common import fail, out
from worker.config import settings

if TYPE_CHECKING:
    from sqlalchemy import Engine as Database

users_app = typer.Typer(help="The console's users and their roles.", no_args_is_help=True)

RoleOption = Annotated[
    Role, typer.Option("--role", help="viewer | support | marketer | admin", case_sensitive=False)
]


def _database() -> Database:
    from sqlalchemy import inspect

    from worker.store.db import database_url, engine_for

    database = engine_for(database_url(settings()))
    if not inspect(database).has_table("users"):
        fail("the database has no users table yet: run `nurture db upgrade` first")
    return database


def interactive() -> bool:
    """Whether a person types at a terminal (else a script pipes the password in)."""
    return sys.stdin.isatty()


def _password() -> str:
    if not interactive():
        given = sys.stdin.readline().rstrip("\r\n")
        if not given:
            fail("no password on standard input: give it as one line")
        return given
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@users_app.command("add")
def users_add(name: str, role: RoleOption) -> None:
    """Add a person with a role; the password is read from standard input or prompted."""
    from worker.accounts.users import add_user, check_password, find_user, normal_name
    from worker.kit.errors import NurtureError

    database = _database()
    try:
        name = normal_name(name)
        if find_user(database, name) is not None:
            fail(f"a user named {name} exists already")
        password = _password()
        check_password(password)
        added = add_user(database, name, role, password)
    except NurtureError as exc:
        fail(str(exc))
    out.print(f"added {added.name} ({added.role})", markup=False)


@users_app.command("list")
def users_list() -> None:
    """Every user: name, role, when added, when the password last changed."""
    from rich.table import Table

    from worker.accounts.users import list_users

    found = list_users(_database())
    if not found:
        out.print("no users yet: `nurture users add NAME --role admin`", markup=False)
        return
    table = Table("name", "role", "created", "last password change", "must change")
    for user in found:
        table.add_row(
            user.name,
            user.role.value,
            user.created_at.strftime("%Y-%m-%d %H:%M UTC"),
            user.password_changed_at.strftime("%Y-%m-%d %H:%M UTC"),
            "yes" if user.must_change_password else "",
        )
    out.print(table)


@users_app.command("remove")
def users_remove(name: str) -> None:
    """Remove a person; their sessions end at once. The last admin stays."""
    from worker.accounts.users import remove_user
    from worker.kit.errors import NurtureError

    try:
        remove_user(_database(), name)
    except NurtureError as exc:
        fail(str(exc))
    out.print(f"removed {name.strip().lower()}", markup=False)


@users_app.command("set-role")
def users_set_role(
    name: str,
    role: Annotated[
        Role, typer.Argument(help="viewer | support | marketer | admin", case_sensitive=False)
    ],
) -> None:
    """Give a person another role; their sessions end (they sign in again)."""
    from worker.accounts.users import set_role
    from worker.kit.errors import NurtureError

    try:
        changed = set_role(_database(), name, role)
    except NurtureError as exc:
        fail(str(exc))
    out.print(f"{changed.name} is now {changed.role}", markup=False)


@users_app.command("set-password")
def users_set_password(
    name: str,
    no_change_required: Annotated[
        bool,
        typer.Option(
            "--no-change-required",
            help="Keep this password: do not ask for a new one at the next sign-in.",
        ),
    ] = False,
) -> None:
    """Reset a person's password (read from standard input or prompted); their sessions end,
    and the next sign-in asks them for a new one unless --no-change-required."""
    from worker.accounts.users import check_password, find_user, set_password
    from worker.kit.errors import NurtureError

    database = _database()
    if find_user(database, name) is None:
        fail(f"no user named {name.strip().lower()}")
    try:
        password = _password()
        check_password(password)
        changed = set_password(
            database, name, password, must_change_password=not no_change_required
        )
    except NurtureError as exc:
        fail(str(exc))
    then = "" if no_change_required else "; a new one is asked for at the next sign-in"
    out.print(f"password of {changed.name} changed{then}", markup=False)
