"""Who may do what in the console (issue 13's role table). The server checks every action
against it; hiding a button is only a courtesy."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"
    SUPPORT = "support"
    MARKETER = "marketer"
    ADMIN = "admin"


class Permission(StrEnum):
    READ = "read"
    """Leads, sequences, operations."""
    LEAD_ACT = "lead_act"
    """Pause, resume, exit or enroll a lead; change its subscriptions."""
    LEAD_EXPORT = "lead_export"
    SEQUENCE_ACT = "sequence_act"
    """Pause, resume or retire a sequence."""
    SENDS_HOLD = "sends_hold"
    """The incident switch: hold or release every send."""
    ERASE = "erase"
    USERS = "users"


_GRANTS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.SUPPORT: frozenset({Permission.READ, Permission.LEAD_ACT, Permission.LEAD_EXPORT}),
    Role.MARKETER: frozenset({Permission.READ, Permission.SEQUENCE_ACT}),
    Role.ADMIN: frozenset(Permission),
}


def allows(role: Role, permission: Permission) -> bool:
    return permission in _GRANTS[role]


def roles_allowed(permission: Permission) -> list[Role]:
    """The roles that may, in the table's order: what a refusal names."""
    return [role for role in Role if allows(role, permission)]
