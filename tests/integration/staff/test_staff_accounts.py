"""Staff accounts: created by command, signing in and out, lockout, expiry, roles."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from consent_service.domain.staff import PERMISSIONS, Permission, Role
from consent_service.models import StaffUser
from tests.conftest import NOW
from tests.integration.public_pages import csrf_token, main_text
from tests.integration.staff.helpers import PASSWORD, make_staff, sign_in

REFUSED = "That email and password do not match an account that can sign in now"


def test_staff_create_asks_for_the_password_twice_and_stores_only_its_argon2_hash(runner, session):
    result = runner.invoke(args=["staff", "create", "Desk@Library.example.org", "--role", "staff"],
                           input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert "staff account desk@library.example.org created, role staff" in result.output
    [user] = session.scalars(select(StaffUser)).all()
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash


def test_staff_create_can_generate_a_password_shown_once(runner, client):
    result = runner.invoke(args=["staff", "create", "m@library.example.org", "--role",
                                 "marketing", "--generate-password"])
    assert result.exit_code == 0
    password = result.output.split("password (shown once): ")[1].strip()
    assert sign_in(client, "m@library.example.org", password).status_code == 302


@pytest.mark.parametrize(("args", "line"), [
    (["x@library.example.org", "--role", "boss"],
     "Error: unknown role 'boss'; the roles are: admin, staff, marketing"),
    (["not an address", "--role", "staff"], "Error: not a valid email address"),
])
def test_staff_create_refuses_in_one_line(runner, session, args, line):
    result = runner.invoke(args=["staff", "create", *args], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 1 and result.output.strip().splitlines()[-1].startswith(line)
    assert session.scalars(select(StaffUser)).all() == []


def test_a_short_password_or_a_second_account_for_an_address_is_refused(runner, session):
    short = runner.invoke(args=["staff", "create", "a@library.example.org", "--role", "admin"],
                          input="short\nshort\n")
    assert short.output.strip().endswith("Error: a password needs at least 12 characters")
    make_staff(session, "admin", "a@library.example.org")
    again = runner.invoke(args=["staff", "create", "a@library.example.org", "--role", "staff"],
                          input=f"{PASSWORD}\n{PASSWORD}\n")
    assert again.output.strip().endswith(
        "Error: a staff account for a@library.example.org exists already")


def test_signing_in_opens_the_staff_home_and_signing_out_closes_it(client, session):
    make_staff(session, "staff")
    anonymous = client.get("/staff/")
    assert anonymous.status_code == 302 and "/staff/login?next=/staff/" in anonymous.location

    signed_in = sign_in(client, "staff@library.example.org", next_path="/staff/")
    assert signed_in.status_code == 302 and signed_in.location.endswith("/staff/")
    home = client.get("/staff/")
    assert home.status_code == 200 and home.headers["Cache-Control"] == "no-store"
    assert "Signed in as staff@library.example.org, role staff" in main_text(home.text)

    assert client.post("/staff/logout", buffered=True).status_code == 400  # no CSRF token
    out = client.post("/staff/logout", data={"csrf_token": csrf_token(home.text)}, buffered=True)
    assert out.status_code == 302
    assert client.get("/staff/").status_code == 302


def test_a_wrong_password_and_an_unknown_address_get_the_same_answer(client, session):
    make_staff(session, "staff")
    wrong = sign_in(client, "staff@library.example.org", "not the password at all")
    unknown = sign_in(client, "nobody@library.example.org")
    assert wrong.status_code == unknown.status_code == 401
    assert REFUSED in main_text(wrong.text) and main_text(wrong.text) == main_text(unknown.text)


def test_five_wrong_passwords_lock_the_account_for_fifteen_minutes(client, session, clock):
    make_staff(session, "staff")
    for _ in range(5):
        assert sign_in(client, "staff@library.example.org", "wrong password!!").status_code == 401
    locked = sign_in(client, "staff@library.example.org")
    assert locked.status_code == 401 and REFUSED in main_text(locked.text)
    clock.at = NOW + timedelta(minutes=16)
    assert sign_in(client, "staff@library.example.org").status_code == 302


def test_a_login_ends_after_the_session_hours(client, session, clock):
    make_staff(session, "staff")
    sign_in(client, "staff@library.example.org")
    clock.at = NOW + timedelta(hours=7, minutes=59)
    assert client.get("/staff/").status_code == 200
    clock.at = NOW + timedelta(hours=8, minutes=1)
    assert client.get("/staff/").status_code == 302


def test_after_signing_in_only_a_staff_page_of_this_site_is_followed(client, session):
    make_staff(session, "staff")
    response = sign_in(client, "staff@library.example.org", next_path="https://evil.example/")
    assert response.location.endswith("/staff/")


def test_sign_in_is_rate_limited_per_client(app_factory):
    app = app_factory(STAFF_LOGIN_LIMIT_PER_CLIENT="3 per minute")
    client = app.test_client()
    answers = [sign_in(client, "x@library.example.org").status_code for _ in range(4)]
    assert answers == [401, 401, 401, 429]


def test_each_role_has_what_the_library_expects():
    assert PERMISSIONS[Role.MARKETING] == {Permission.EXPORT_CONTACTS}
    assert Permission.LOOK_UP_PATRONS not in PERMISSIONS[Role.MARKETING]
    assert Permission.MANAGE_STAFF not in PERMISSIONS[Role.STAFF]
    assert PERMISSIONS[Role.ADMIN] == set(Permission)
