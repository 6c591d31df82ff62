"""Staff roles and what each may do: the one table the staff pages, commands and tests ask."""

from __future__ import annotations

from enum import StrEnum

from consent_service.domain import ConsentServiceError


class Role(StrEnum):
    """A staff account's role."""

    ADMIN = "admin"  # staff accounts, topics, policies, API keys, the access log; and all of staff's
    STAFF = "staff"  # look patrons up, record decisions for them, guardian tasks, erasure, roster
    MARKETING = "marketing"  # exports and counts; never an individual's consent history


class Permission(StrEnum):
    """Something a staff page or command lets a person do."""

    LOOK_UP_PATRONS = "look_up_patrons"  # a patron page: decisions, history, guardians (logged)
    RECORD_DECISIONS = "record_decisions"  # on a patron's behalf, and after a guardian's ID check
    GUARDIAN_TASKS = "guardian_tasks"  # guardians' requests for a child's data
    ERASE_PATRONS = "erase_patrons"  # erasure requests, and erasing a patron's personal data
    PHOTO_ROSTER = "photo_roster"  # who must not be photographed at an event
    EXPORT_CONTACTS = "export_contacts"  # eligible-contact lists, counts, withdrawals since
    MANAGE_STAFF = "manage_staff"
    MANAGE_TOPICS = "manage_topics"
    MANAGE_API_KEYS = "manage_api_keys"
    MANAGE_POLICIES = "manage_policies"  # publish policy versions
    READ_ACCESS_LOG = "read_access_log"


_STAFF = frozenset({Permission.LOOK_UP_PATRONS, Permission.RECORD_DECISIONS,
                    Permission.GUARDIAN_TASKS, Permission.ERASE_PATRONS, Permission.PHOTO_ROSTER})
PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.STAFF: _STAFF,
    Role.MARKETING: frozenset({Permission.EXPORT_CONTACTS}),
}


class UnknownRoleError(ConsentServiceError):
    """A role that is not admin, staff or marketing."""


def role_of(text: str) -> Role:
    """The role named `text`; raises UnknownRoleError naming the roles."""
    try:
        return Role(text.strip().lower())
    except ValueError:
        raise UnknownRoleError(f"unknown role {text!r}; the roles are: "
                               f"{', '.join(role.value for role in Role)}") from None


def may(role: Role, permission: Permission) -> bool:
    """Whether a staff member with `role` may do `permission`."""
    return permission in PERMISSIONS[role]
