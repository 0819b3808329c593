"""Signing in to the console and staying signed in: the slow-down, the password check, the
session cookie and whom it names now; a person changing their own password."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine as Database

from worker.accounts import sessions, throttle
from worker.accounts.users import (
    AccountRefused,
    User,
    find_user,
    set_password,
    verify,
)
from worker.config import Settings
from worker.kit.errors import NurtureError

WRONG = "Wrong name or password"


class SignInRefused(NurtureError):
    """A sign-in refused: 401 for a wrong name or password, 429 while slowed down."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class SignedIn:
    user: User
    cookie: str


def sign_in(
    database: Database,
    config: Settings,
    name: str,
    password: str,
    address: str | None,
    now: datetime,
) -> SignedIn:
    """The person and their session cookie; SignInRefused otherwise. A wrong name or password
    changes nothing but the failure counts; the same words answer an unknown name."""
    held = throttle.locked(database, name, address, now)
    if held is not None:
        raise SignInRefused(held.message(now), 429)
    user = verify(database, name, password)
    if user is None:
        throttle.record_failure(database, name, address, now)
        raise SignInRefused(WRONG, 401)
    throttle.record_success(database, user.name)
    return SignedIn(user, sessions.issue(config, user.name, user.session_version))


def session_user(database: Database, config: Settings, cookie: str | None) -> User | None:
    """Whom a session cookie names, while it is good: signed by this installation, younger
    than 12 hours, and of the person's current session version (no new password or role
    since, not removed)."""
    if not cookie:
        return None
    found = sessions.read(config, cookie)
    if found is None:
        return None
    user = find_user(database, found.name)
    if user is None or user.session_version != found.version:
        return None
    return user


def renewed_cookie(config: Settings, user: User) -> str:
    """The cookie again with a fresh time: a session lasts 12 hours from the last page."""
    return sessions.issue(config, user.name, user.session_version)


def change_own_password(
    database: Database,
    config: Settings,
    user: User,
    current: str | None,
    new: str,
    repeat: str,
) -> SignedIn:
    """The person's new password (and a new cookie: the change ends every other session).
    `current` is required unless the password is a one-time one that must be changed."""
    if not user.must_change_password and verify(database, user.name, current or "") is None:
        raise AccountRefused("current password", "that is not your current password")
    if new != repeat:
        raise AccountRefused("repeat the new password", "the two new passwords differ")
    if user.must_change_password and verify(database, user.name, new) is not None:
        raise AccountRefused("new password", "choose a password other than the one-time one")
    changed = set_password(database, user.name, new, must_change_password=False)
    return SignedIn(changed, sessions.issue(config, changed.name, changed.session_version))
