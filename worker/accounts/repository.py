"""The queries of the accounts: people by name, the admins, failed sign-ins."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlmodel import Session, col

from worker.store.tables import SignInFailureRow, UserRow


def user(session: Session, name: str, *, for_update: bool = False) -> UserRow | None:
    return session.get(UserRow, name, with_for_update=for_update)


def users(session: Session) -> list[UserRow]:
    return list(session.execute(select(UserRow).order_by(col(UserRow.name))).scalars())


def user_count(session: Session) -> int:
    return int(session.execute(select(func.count()).select_from(UserRow)).scalar_one())


def admins(session: Session) -> list[str]:
    """The admins' names, locked until the transaction ends: two admins demoting each other at
    once cannot leave nobody."""
    rows = session.execute(
        select(col(UserRow.name)).where(col(UserRow.role) == "admin").with_for_update()
    ).scalars()
    return list(rows)


def failure(session: Session, key: str) -> SignInFailureRow | None:
    return session.get(SignInFailureRow, key, with_for_update=True)


def failures(session: Session, keys: list[str]) -> list[SignInFailureRow]:
    rows = session.execute(select(SignInFailureRow).where(col(SignInFailureRow.key).in_(keys)))
    return list(rows.scalars())


def forget_failures(session: Session, key: str) -> None:
    session.execute(delete(SignInFailureRow).where(col(SignInFailureRow.key) == key))
