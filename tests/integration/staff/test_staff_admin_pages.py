"""Admin pages: staff accounts (create with a password shown once, deactivate) and email topics
(add and rename, with a Spanish name and a SendGrid group)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from consent_service.models import StaffUser, Topic
from tests.conftest import NOW
from tests.integration.public_pages import csrf_token, main_text
from tests.integration.staff.desk import alert, signed_in
from tests.integration.staff.helpers import make_staff, sign_in


def create(client, token, email, role="staff"):
    return client.post("/staff/admin/staff", data={"csrf_token": token, "email": email,
                                                   "role": role})


def test_a_new_account_gets_a_password_shown_once_that_signs_in(client, session, app):
    _, token = signed_in(client, session, "admin")
    response = create(client, token, "New.Clerk@Library.example.org", "marketing")
    assert response.status_code == 200
    text = main_text(response.text)
    assert "Account created for new.clerk@library.example.org, role marketing" in text
    password = re.search(r"Password, shown this once: (\S+)", text).group(1)
    assert password not in client.get("/staff/admin/staff").text

    newcomer = app.test_client()
    assert sign_in(newcomer, "new.clerk@library.example.org", password).status_code == 302
    assert "role marketing" in main_text(newcomer.get("/staff/").text)


@pytest.mark.parametrize(("email", "role", "line"), [
    ("admin@library.example.org", "staff",
     "A staff account for admin@library.example.org exists already."),
    ("not an address", "staff", "Not a valid email address: An email address must have an @-sign."),
    ("x@library.example.org", "boss", "Not a valid choice."),
])
def test_an_account_that_cannot_be_created_gets_one_line(client, session, email, role, line):
    _, token = signed_in(client, session, "admin")
    response = create(client, token, email, role)
    assert response.status_code == 400
    assert alert(response.text) == line
    assert len(session.scalars(select(StaffUser)).all()) == 1


def test_a_deactivated_account_cannot_sign_in_and_its_login_ends(client, session, app):
    _, token = signed_in(client, session, "admin")
    clerk = app.test_client()
    member, _ = signed_in(clerk, session, "staff")
    assert clerk.get("/staff/").status_code == 200

    response = client.post(f"/staff/admin/staff/{member.id}/deactivate",
                           data={"csrf_token": token})
    assert response.status_code == 302
    assert ("staff@library.example.org is deactivated: it can no longer sign in." in
            main_text(client.get(response.location).text))
    assert clerk.get("/staff/").status_code == 302
    assert sign_in(app.test_client(), member.email).status_code == 401


def test_an_admin_cannot_deactivate_their_own_account(client, session):
    admin, token = signed_in(client, session, "admin")
    response = client.post(f"/staff/admin/staff/{admin.id}/deactivate",
                           data={"csrf_token": token})
    assert response.status_code == 400
    assert alert(response.text) == "You cannot deactivate your own account."
    assert client.get("/staff/").status_code == 200


def save_topic(client, token, **fields):
    data = {"csrf_token": token, "key": "", "name": "", "name_es": "", "sendgrid_group": "",
            **fields}
    return client.post("/staff/admin/topics", data=data)


def test_a_topic_is_added_and_renamed_as_the_topics_add_command_does(client, session):
    _, token = signed_in(client, session, "admin")
    added = save_topic(client, token, key="kids_teens", name="Kids & teens",
                       name_es="Niños y jóvenes", sendgrid_group="42")
    assert added.status_code == 302
    listed = main_text(client.get(added.location).text)
    assert "Topic kids_teens saved: Kids & teens." in listed
    assert "kids_teens Kids & teens Niños y jóvenes 42 Rename" in listed

    form = client.get("/staff/admin/topics", query_string={"key": "kids_teens"}).text
    assert 'value="Niños y jóvenes"' in form and 'value="42"' in form
    save_topic(client, token, key="kids_teens", name="Children and teens")
    session.expire_all()
    topic = session.scalar(select(Topic).where(Topic.key == "kids_teens"))
    assert (topic.name, topic.names, topic.sendgrid_group_id) == (
        "Children and teens", {"es": "Niños y jóvenes"}, 42)


@pytest.mark.parametrize(("fields", "line"), [
    ({"key": "Kids Teens", "name": "Kids"},
     "Topic key 'Kids Teens' must be 1-64 lower-case letters, digits, '_' or '-'."),
    ({"key": "kids", "name": ""}, "Enter the topic's name."),
    ({"key": "other", "name": "Other", "sendgrid_group": "7"},
     "SendGrid group 7 already belongs to topic 'events'."),
    ({"key": "kids", "name": "Kids", "sendgrid_group": "seven"}, "Not a valid integer value."),
    ({"key": "kids", "name": "Kids\u202e"},
     "A topic name contains a character that is not allowed: U+202E (RIGHT-TO-LEFT OVERRIDE)."),
])
def test_a_topic_that_cannot_be_saved_gets_one_line(client, session, fields, line):
    session.add(Topic(key="events", name="Events", sendgrid_group_id=7, created_at=NOW))
    session.commit()
    _, token = signed_in(client, session, "admin")
    response = save_topic(client, token, **fields)
    assert response.status_code == 400
    assert alert(response.text) == line
    assert session.scalars(select(Topic.key)).all() == ["events"]


def test_the_staff_home_links_each_role_to_its_pages(client, session, app):
    expected = {
        "admin": ["Access log: who viewed which patron", "Staff accounts", "Email topics",
                  "Find a patron", "Guardians' requests for a child's data",
                  "Photo roster for an event"],
        "staff": ["Find a patron", "Guardians' requests for a child's data",
                  "Photo roster for an event"],
    }
    for role, titles in expected.items():
        browser = app.test_client()
        signed_in(browser, session, role)
        home = main_text(browser.get("/staff/").text)
        for title in titles:
            assert title in home, (role, title)
        assert ("Staff accounts" in home) is (role == "admin")
    marketing = app.test_client()
    make_staff(session, "marketing")
    sign_in(marketing, "marketing@library.example.org")
    home = main_text(marketing.get("/staff/").text)
    assert "Find a patron" not in home and "Staff accounts" not in home


def test_an_admin_creates_an_api_key_shown_once_that_works_and_revokes_it(client, session):
    make_staff(session, "admin")
    sign_in(client, "admin@library.example.org")
    page = client.get("/staff/admin/api-keys")
    created = client.post("/staff/admin/api-keys", buffered=True, data={
        "csrf_token": csrf_token(page.text), "name": "The ILS",
        "scopes": ["consents:read", "patrons:write"]})

    assert created.status_code == 200
    [key] = re.findall(r'<span class="password">(csk_[\w-]+)</span>', created.text)
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/v1/events", headers=headers).status_code == 200
    assert key not in client.get("/staff/admin/api-keys").text  # shown once
    prefix = key[:12]
    revoked = client.post(f"/staff/admin/api-keys/{prefix}/revoke", buffered=True,
                          data={"csrf_token": csrf_token(page.text)})
    assert revoked.status_code == 302
    assert client.get("/api/v1/events", headers=headers).status_code == 401
    assert "revoked" in main_text(client.get("/staff/admin/api-keys").text)


def test_an_api_key_without_a_scope_is_refused_in_one_line(client, session):
    make_staff(session, "admin")
    sign_in(client, "admin@library.example.org")
    page = client.get("/staff/admin/api-keys")
    refused = client.post("/staff/admin/api-keys", buffered=True, data={
        "csrf_token": csrf_token(page.text), "name": "No scopes"})
    assert refused.status_code == 400
    assert "Choose at least one scope." in main_text(refused.text)
