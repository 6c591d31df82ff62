"""Email me a link: one message per address listing each patron there, and nothing given away."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from consent_service.models import OutboxMessage
from tests.conftest import NOW
from tests.integration.public_pages import csrf_token, main_text, sent_mail


@pytest.fixture
def app(app_factory):
    return app_factory(CLOCK=lambda: NOW)


def ask(client, email, *, ip="198.51.100.7", buffered=True):
    """Fill in and send the form as a browser does: open the page, then post with its CSRF token."""
    token = csrf_token(client.get("/preferences").text)
    return client.post("/preferences", data={"csrf_token": token, "email": email},
                       environ_base={"REMOTE_ADDR": ip}, buffered=buffered)


def test_the_page_asks_for_an_email_address(client):
    response = client.get("/preferences")
    assert response.status_code == 200
    assert '<label class="field__label" for="email">Email address</label>' in response.text
    assert 'type="email"' in response.text and 'autocomplete="email"' in response.text


def test_a_household_gets_one_message_with_a_link_for_each_active_patron(
        app, client, session, make_patron):
    make_patron(first_name="Sam", email="okafor.family@example.org")
    make_patron(first_name="Grace", email="okafor.family@example.org")
    make_patron(first_name="Old", email="okafor.family@example.org", status="inactive")
    make_patron(first_name="Neighbour", email="next.door@example.org")

    response = ask(client, "  Okafor.Family@Example.org ")

    assert response.status_code == 200
    assert "Check your email" in response.text
    [message] = sent_mail(app)
    assert message["To"] == "okafor.family@example.org"
    body = message.get_body(("plain",)).get_content()
    assert "Grace: " in body and "Sam: " in body
    assert "Old" not in body and "Neighbour" not in body
    links = [line.split(": ", 1)[1] for line in body.splitlines()
             if line.startswith(("Grace: ", "Sam: "))]
    for link in links:
        assert client.get(urlsplit(link).path).status_code == 200
    [row] = session.scalars(select(OutboxMessage)).all()
    assert (row.template, row.category) == ("preferences_link", "transactional")


def test_a_known_and_an_unknown_address_get_the_same_answer(app, client, make_patron):
    make_patron(email="known@example.org")
    known = ask(app.test_client(), "known@example.org")
    unknown = ask(app.test_client(), "unknown@example.org")

    assert known.status_code == unknown.status_code == 200
    assert known.data == unknown.data
    assert sorted(known.headers.keys()) == sorted(unknown.headers.keys())
    assert len(sent_mail(app)) == 1


def test_the_message_goes_out_after_the_answer_so_timing_does_not_tell(app, client, make_patron):
    make_patron(email="known@example.org")
    response = ask(client, "known@example.org", buffered=False)
    assert response.status_code == 200
    assert sent_mail(app) == []
    response.close()
    assert len(sent_mail(app)) == 1


def test_an_address_that_cannot_receive_mail_gets_the_form_again_with_one_line(app, client):
    response = ask(client, "not an address")
    assert response.status_code == 400
    assert "Enter an email address like name@example.org." in main_text(response.text)
    assert 'aria-invalid="true"' in response.text
    assert sent_mail(app) == []


def test_an_empty_address_is_asked_for(client):
    response = ask(client, "   ")
    assert response.status_code == 400
    assert "Enter your email address." in main_text(response.text)


def test_the_form_needs_its_csrf_token(app, client, make_patron):
    make_patron(email="known@example.org")
    response = client.post("/preferences", data={"email": "known@example.org"})
    assert response.status_code == 400
    assert sent_mail(app) == []


def test_asking_too_often_for_one_address_gets_a_friendly_429_from_any_client(app, make_patron):
    make_patron(email="known@example.org")
    answers = [ask(app.test_client(), "known@example.org", ip=f"192.0.2.{n}").status_code
               for n in range(1, 5)]
    assert answers == [200, 200, 200, 429]
    limited = ask(app.test_client(), "KNOWN@example.org", ip="192.0.2.99")
    assert limited.status_code == 429
    assert "Too many requests" in limited.text
    assert "Please wait an hour and try again." in limited.text
    assert "Retry-After" in limited.headers
    assert len(sent_mail(app)) == 3


def test_an_unknown_address_is_limited_the_same_way(app):
    answers = [ask(app.test_client(), "nobody@example.org", ip=f"192.0.2.{n}").status_code
               for n in range(1, 5)]
    assert answers == [200, 200, 200, 429]


def test_one_client_asking_for_many_addresses_is_limited(app_factory):
    app = app_factory(CLOCK=lambda: NOW, PREFERENCE_LINK_LIMIT_PER_CLIENT="2 per hour")
    client = app.test_client()
    answers = [ask(client, f"reader{n}@example.org").status_code for n in range(3)]
    assert answers == [200, 200, 429]
    assert ask(client, "reader9@example.org", ip="198.51.100.8").status_code == 200


def test_the_page_follows_the_browsers_language(client):
    response = client.get("/preferences", headers={"Accept-Language": "es-MX,es;q=0.9,en;q=0.5"})
    assert '<html lang="es">' in response.text
    assert "Reciba un enlace a sus preferencias de correo" in response.text


def test_the_message_is_in_the_patrons_own_language_whatever_the_page_used(app, client,
                                                                           make_patron):
    make_patron(email="lucia@example.org", preferred_language="es")
    client.get("/preferences?lang=en")
    ask(client, "lucia@example.org")
    [message] = sent_mail(app)
    assert message.get_body(("plain",)).get_content().startswith("Hola")


def test_a_shared_rate_limit_store_is_a_setting():
    from consent_service.config import from_environment

    settings = from_environment({"CONSENT_RATELIMIT_STORAGE_URL": "redis://cache.internal:6379/2"})
    assert settings == {"RATELIMIT_STORAGE_URI": "redis://cache.internal:6379/2"}
    older_spelling = from_environment({"CONSENT_RATELIMIT_STORAGE_URI": "redis://cache.internal:6379/2"})
    assert older_spelling == settings
