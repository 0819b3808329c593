"""Password hashes: argon2id through argon2-cffi, with its current recommended parameters;
a hash made with older parameters is replaced at the next sign-in."""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 10
MAX_LENGTH = 1000
"""Longer input is refused before hashing: nobody types it, and it costs the server."""


@cache
def _hasher() -> PasswordHasher:
    return PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def password_matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher().check_needs_rehash(password_hash)


def password_problem(password: str) -> str | None:
    """Why this password is refused, in words; None when it will do."""
    if len(password) < MIN_LENGTH:
        return f"the password must be at least {MIN_LENGTH} characters long"
    if len(password) > MAX_LENGTH:
        return f"the password must be at most {MAX_LENGTH} characters long"
    if password != password.strip():
        return "the password must not start or end with a space"
    return None


@cache
def _decoy() -> str:
    return hash_password("not anybody's password")


def decoy_check(password: str) -> None:
    """Spend the time a real check takes, so an unknown name answers as slowly as a known one."""
    password_matches(_decoy(), password)
