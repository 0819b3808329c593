"""The people who sign in to the console: add, list, remove, change a role or a password, check
a password. Names are case-insensitive (kept in lower case); there is always an admin left.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine as Database
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from worker.accounts import repository as store
from worker.accounts.passwords import (
    decoy_check,
    hash_password,
    needs_rehash,
    password_matches,
    password_problem,
)
from worker.accounts.roles import Role
from worker.kit.clock import utcnow
from worker.kit.errors import Conflict, InvalidInput, NotFound
from worker.store.db import transaction
from worker.store.tables import UserRow

NAME = re.compile(r"^[a-z0-9._-]{1,64}$")
FIRST_ADMIN = "admin"


class AccountRefused(InvalidInput):
    """A name, role or password the accounts refuse, naming the field to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    must_change_password: bool
    created_at: datetime
    password_changed_at: datetime
    session_version: int


def _user(row: UserRow) -> User:
    return User(
        name=row.name,
        role=Role(row.role),
        must_change_password=row.must_change_password,
        created_at=row.created_at,
        password_changed_at=row.password_changed_at,
        session_version=row.session_version,
    )


def normal_name(name: str) -> str:
    """The name as kept (lower case), or AccountRefused saying what a name may hold."""
    found = name.strip().lower()
    if not NAME.match(found):
        raise AccountRefused(
            "name", "use 1 to 64 letters, digits, dots, underscores or hyphens, like ana.ito"
        )
    return found


def role_of(value: str) -> Role:
    try:
        return Role(value.strip().lower())
    except ValueError:
        names = ", ".join(role.value for role in Role)
        raise AccountRefused("role", f"{value!r} is not a role: use one of {names}") from None


def check_password(password: str) -> None:
    problem = password_problem(password)
    if problem is not None:
        raise AccountRefused("password", problem)


def add_user(
    database: Database,
    name: str,
    role: Role,
    password: str,
    *,
    must_change_password: bool = False,
    now: datetime | None = None,
) -> User:
    """A new person; Conflict when the name is taken."""
    name = normal_name(name)
    check_password(password)
    now = now or utcnow()
    with transaction(database) as session:
        if store.user(session, name) is not None:
            raise Conflict(f"a user named {name} exists already")
        row = UserRow(
            name=name,
            role=role.value,
            password_hash=hash_password(password),
            must_change_password=must_change_password,
            created_at=now,
            password_changed_at=now,
        )
        session.add(row)
        return _user(row)


def list_users(database: Database) -> list[User]:
    with transaction(database) as session:
        return [_user(row) for row in store.users(session)]


def find_user(database: Database, name: str) -> User | None:
    with transaction(database) as session:
        row = store.user(session, name.strip().lower())
        return _user(row) if row is not None else None


def has_users(database: Database) -> bool:
    with transaction(database) as session:
        return store.user_count(session) > 0


def remove_user(database: Database, name: str) -> None:
    with transaction(database) as session:
        row = _existing(session, name)
        _keep_an_admin(session, row, None)
        session.delete(row)


def set_role(database: Database, name: str, role: Role) -> User:
    """A new role; the person's sessions end (they sign in again under the new role)."""
    with transaction(database) as session:
        row = _existing(session, name)
        if row.role == role.value:
            return _user(row)
        _keep_an_admin(session, row, role)
        row.role = role.value
        row.session_version += 1
        session.add(row)
        return _user(row)


def set_password(
    database: Database,
    name: str,
    password: str,
    *,
    must_change_password: bool,
    now: datetime | None = None,
) -> User:
    """A new password; every session of the person ends. `must_change_password`: the next
    sign-in asks for another (the reset path)."""
    check_password(password)
    with transaction(database) as session:
        row = _existing(session, name)
        row.password_hash = hash_password(password)
        row.must_change_password = must_change_password
        row.password_changed_at = now or utcnow()
        row.session_version += 1
        session.add(row)
        return _user(row)


def verify(database: Database, name: str, password: str) -> User | None:
    """The person when the password is theirs, else None (an unknown name takes as long)."""
    with transaction(database) as session:
        row = store.user(session, name.strip().lower()) if len(name) <= 200 else None
        if row is None:
            decoy_check(password)
            return None
        if not password_matches(row.password_hash, password):
            return None
        if needs_rehash(row.password_hash):
            row.password_hash = hash_password(password)
            session.add(row)
        return _user(row)


def create_first_admin(database: Database, now: datetime | None = None) -> str | None:
    """On a fresh installation (no user at all): the user `admin` with a one-time password,
    which is returned to be printed; it must be changed at the first sign-in. None when
    somebody exists already."""
    password = secrets.token_urlsafe(15)
    with transaction(database) as session:
        if store.user_count(session) > 0:
            return None
    try:
        add_user(database, FIRST_ADMIN, Role.ADMIN, password, must_change_password=True, now=now)
    except (Conflict, IntegrityError):  # another process made it first
        return None
    return password


def _existing(session: Session, name: str) -> UserRow:
    row = store.user(session, name.strip().lower(), for_update=True)
    if row is None:
        raise NotFound(f"no user named {name.strip().lower()}")
    return row


def _keep_an_admin(session: Session, row: UserRow, new_role: Role | None) -> None:
    """Refuse to remove or demote the last admin: nobody could manage the users then."""
    if row.role != Role.ADMIN.value or new_role is Role.ADMIN:
        return
    if store.admins(session) == [row.name]:
        raise Conflict(f"{row.name} is the last admin: make another user admin first")
