"""Every staff route and who may use it: the data of the authorisation matrix
(test_authorisation_matrix.py). A new staff page adds its routes here; `{patron}`, `{child}`,
`{task}`, `{erasure}`, `{account}`, `{key}` and `{export}` in a path are filled from the arranged World
(desk.py). Every /staff route must have a row here or in DOOR_ROUTES (tests/reliability/test_access.py
fails otherwise)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from consent_service.domain.ledger import Decision, Source
from consent_service.domain.purposes import PurposeKey
from consent_service.domain.staff import Permission


@dataclass(frozen=True)
class StaffRoute:
    """A route, the permission it needs, and what a member with it gets for `data` (posted with
    the session's CSRF token)."""

    method: str
    path: str
    permission: Permission
    allowed: int
    data: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


STAFF_ROUTES: list[StaffRoute] = [
    StaffRoute("GET", "/staff/patrons?q=Reyes", Permission.LOOK_UP_PATRONS, 200),
    StaffRoute("GET", "/staff/patrons/{patron}", Permission.LOOK_UP_PATRONS, 200),
    StaffRoute("POST", "/staff/patrons/{patron}/decisions", Permission.RECORD_DECISIONS, 302,
               {"purpose": PurposeKey.POSTAL_MARKETING.value, "topic": "",
                "decision": Decision.OPT_OUT.value, "source": Source.STAFF_PHONE.value}),
    StaffRoute("POST", "/staff/patrons/{child}/id-check", Permission.RECORD_DECISIONS, 302,
               {"guardian": "21000002", "purpose": PurposeKey.CONTACT_UPDATE.value,
                "checked": "y"}),
    StaffRoute("GET", "/staff/guardian-tasks", Permission.GUARDIAN_TASKS, 200),
    StaffRoute("POST", "/staff/guardian-tasks/{task}/done", Permission.GUARDIAN_TASKS, 302),
    StaffRoute("GET", "/staff/erasure-requests", Permission.ERASE_PATRONS, 200),
    StaffRoute("POST", "/staff/erasure-requests/{erasure}/erase", Permission.ERASE_PATRONS, 302),
    StaffRoute("POST", "/staff/patrons/{patron}/erase", Permission.ERASE_PATRONS, 302,
               {"card": "21000001"}),
    StaffRoute("GET", "/staff/photo-roster", Permission.PHOTO_ROSTER, 200),
    StaffRoute("POST", "/staff/photo-roster", Permission.PHOTO_ROSTER, 200,
               {"cards": "21000001\n21000003\nNOPE"}),
    StaffRoute("GET", "/staff/access-log", Permission.READ_ACCESS_LOG, 200),
    StaffRoute("GET", "/staff/admin/staff", Permission.MANAGE_STAFF, 200),
    StaffRoute("POST", "/staff/admin/staff", Permission.MANAGE_STAFF, 200,
               {"email": "new.clerk@library.example.org", "role": "staff"}),
    StaffRoute("POST", "/staff/admin/staff/{account}/deactivate", Permission.MANAGE_STAFF, 302),
    StaffRoute("GET", "/staff/admin/api-keys", Permission.MANAGE_API_KEYS, 200),
    StaffRoute("POST", "/staff/admin/api-keys", Permission.MANAGE_API_KEYS, 200,
               {"name": "the catalog", "scopes": "consents:read"}),
    StaffRoute("POST", "/staff/admin/api-keys/{key}/revoke", Permission.MANAGE_API_KEYS, 302),
    StaffRoute("GET", "/staff/admin/policies", Permission.MANAGE_POLICIES, 200),
    StaffRoute("POST", "/staff/admin/policies", Permission.MANAGE_POLICIES, 302,
               {"version": "2026-07", "effective": "2026-07-01", "summary": "Shorter IP keeping.",
                "material": "y"}),
    StaffRoute("GET", "/staff/admin/topics", Permission.MANAGE_TOPICS, 200),
    StaffRoute("POST", "/staff/admin/topics", Permission.MANAGE_TOPICS, 302,
               {"key": "adult_learning", "name": "Adult learning", "name_es": "",
                "sendgrid_group": ""}),
    StaffRoute("GET", "/staff/marketing/exports?purpose=postal_marketing",
               Permission.EXPORT_CONTACTS, 200),
    StaffRoute("POST", "/staff/marketing/exports/download", Permission.EXPORT_CONTACTS, 200,
               {"purpose": PurposeKey.POSTAL_MARKETING.value, "topic": ""}),
    # no export was made: the permission is checked before the export is looked up
    StaffRoute("GET", "/staff/marketing/exports/{export}/withdrawals", Permission.EXPORT_CONTACTS,
               404),
    StaffRoute("GET", "/staff/marketing/exports/{export}/withdrawals.csv",
               Permission.EXPORT_CONTACTS, 404),
]


@dataclass(frozen=True)
class DoorRoute:
    """A /staff route every role may use (signing in and out, the home): what an anonymous
    client and a signed-in member get."""

    method: str
    path: str
    anonymous: int
    signed_in: int

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


DOOR_ROUTES: list[DoorRoute] = [
    DoorRoute("GET", "/staff/", 302, 200),
    DoorRoute("GET", "/staff/login", 200, 200),
    DoorRoute("POST", "/staff/login", 401, 401),  # a form with no password: refused, one line
    DoorRoute("POST", "/staff/logout", 401, 302),
]

# Blueprints whose every route must be in STAFF_ROUTES (the matrix test checks it).
COVERED_BLUEPRINTS = ("staff_patrons", "staff_admin", "staff_marketing")
