"""The accounts service against SQLite and PostgreSQL: names and passwords checked with clear
words, argon2 hashes, the last admin kept, sessions ended by a new password or role, and the
first admin of a fresh installation with a one-time password."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from worker.accounts.passwords import password_matches
from worker.accounts.roles import Permission, Role, allows
from worker.accounts.users import (
    AccountRefused,
    add_user,
    create_first_admin,
    find_user,
    list_users,
    remove_user,
    set_password,
    set_role,
    verify,
)
from worker.kit.errors import Conflict, NotFound
from worker.store.db import make_engine, transaction
from worker.store.migrate import upgrade
from worker.store.tables import UserRow

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"


@pytest.fixture
def database(database_url: str) -> Engine:
    upgrade(database_url)
    return make_engine(database_url)


def test_the_role_table_is_the_issues() -> None:
    table = {
        Permission.READ: {"viewer", "support", "marketer", "admin"},
        Permission.LEAD_ACT: {"support", "admin"},
        Permission.LEAD_EXPORT: {"support", "admin"},
        Permission.SEQUENCE_ACT: {"marketer", "admin"},
        Permission.SENDS_HOLD: {"admin"},
        Permission.ERASE: {"admin"},
        Permission.USERS: {"admin"},
    }
    for permission, roles in table.items():
        assert {role.value for role in Role if allows(role, permission)} == roles, permission
    assert [p.value for p in Permission] == [
        "read", "lead_act", "lead_export", "sequence_act", "sends_hold", "erase", "users",
    ]  # fmt: skip


def test_a_person_is_added_with_a_hash_and_signs_in_by_name_in_any_case(database: Engine) -> None:
    added = add_user(database, "Ana.Ito", Role.SUPPORT, PASSWORD)
    assert (added.name, added.role, added.must_change_password) == ("ana.ito", Role.SUPPORT, False)
    with transaction(database) as session:
        row = session.get(UserRow, "ana.ito")
        assert row is not None
        assert row.password_hash.startswith("$argon2id$")
        assert PASSWORD not in row.password_hash
        assert password_matches(row.password_hash, PASSWORD)
    assert verify(database, "ANA.ITO", PASSWORD) == added
    assert verify(database, "ana.ito", PASSWORD + "!") is None
    assert verify(database, "nobody", PASSWORD) is None
    assert [u.name for u in list_users(database)] == ["ana.ito"]


@pytest.mark.parametrize(
    ("name", "password", "message"),
    [
        ("", PASSWORD, "name: use 1 to 64 letters, digits, dots, underscores or hyphens"),
        ("a" * 65, PASSWORD, "name: use 1 to 64"),
        ("ana ito", PASSWORD, "name: use 1 to 64"),
        ("<script>", PASSWORD, "name: use 1 to 64"),
        ("ana", "short", "password: the password must be at least 10 characters long"),
        ("ana", " padded password ", "password: the password must not start or end with a space"),
    ],
)
def test_bad_names_and_passwords_are_refused_with_the_field_and_nothing_is_added(
    database: Engine, name: str, password: str, message: str
) -> None:
    with pytest.raises(AccountRefused) as refused:
        add_user(database, name, Role.VIEWER, password)
    assert str(refused.value).startswith(message)
    assert list_users(database) == []


def test_a_taken_name_is_a_conflict(database: Engine) -> None:
    add_user(database, "ana", Role.VIEWER, PASSWORD)
    with pytest.raises(Conflict, match="a user named ana exists already"):
        add_user(database, "ANA", Role.ADMIN, PASSWORD)
    assert [(u.name, u.role) for u in list_users(database)] == [("ana", Role.VIEWER)]


def test_the_last_admin_can_be_neither_removed_nor_demoted(database: Engine) -> None:
    add_user(database, "ada", Role.ADMIN, PASSWORD)
    add_user(database, "vera", Role.VIEWER, PASSWORD)
    for attempt in (
        lambda: remove_user(database, "ada"),
        lambda: set_role(database, "ada", Role.SUPPORT),
    ):
        with pytest.raises(Conflict, match="ada is the last admin: make another user admin first"):
            attempt()
    assert [(u.name, u.role) for u in list_users(database)] == [
        ("ada", Role.ADMIN),
        ("vera", Role.VIEWER),
    ]
    set_role(database, "vera", Role.ADMIN)
    set_role(database, "ada", Role.VIEWER)  # another admin now exists
    remove_user(database, "ada")
    assert [(u.name, u.role) for u in list_users(database)] == [("vera", Role.ADMIN)]
    with pytest.raises(NotFound, match="no user named ada"):
        remove_user(database, "ada")


def test_a_new_password_or_role_moves_the_session_version(database: Engine) -> None:
    first = add_user(database, "sam", Role.SUPPORT, PASSWORD)
    assert first.session_version == 1
    reset = set_password(database, "sam", "a brand new password", must_change_password=True)
    assert (reset.session_version, reset.must_change_password) == (2, True)
    assert verify(database, "sam", PASSWORD) is None
    assert verify(database, "sam", "a brand new password") is not None
    assert set_role(database, "sam", Role.MARKETER).session_version == 3
    assert set_role(database, "sam", Role.MARKETER).session_version == 3  # no change, no end
    found = find_user(database, "sam")
    assert found is not None
    assert found.password_changed_at >= first.password_changed_at


def test_a_fresh_installation_gets_an_admin_with_a_one_time_password_once(
    database: Engine,
) -> None:
    password = create_first_admin(database)
    assert password is not None
    assert len(password) >= 20
    admin = verify(database, "admin", password)
    assert admin is not None
    assert (admin.role, admin.must_change_password) == (Role.ADMIN, True)
    assert create_first_admin(database) is None  # somebody exists: nothing is made
    assert [u.name for u in list_users(database)] == ["admin"]


def test_no_first_admin_where_somebody_exists(database: Engine) -> None:
    add_user(database, "vera", Role.VIEWER, PASSWORD)
    assert create_first_admin(database) is None
    assert [u.name for u in list_users(database)] == ["vera"]
