"""The preference center: what it shows, saving only what changed, children, GPC, bad links."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from consent_service.domain.eligibility import Reason
from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.domain.tokens import LinkKind
from consent_service.models import OutboxMessage, PolicyVersion, Topic
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.standing import load_standings
from tests.conftest import NOW
from tests.integration.public_pages import (
    FAR_FUTURE,
    events,
    form_values,
    ledger_count,
    link_token,
    main_text,
    sent_mail,
    tampered,
)

LATER = NOW + timedelta(days=3)


@pytest.fixture
def app(app_factory):
    return app_factory(CLOCK=lambda: NOW)


@pytest.fixture
def topics(session):
    for key, name in (("events", "Library events"), ("kids", "Kids & teens")):
        session.add(Topic(key=key, name=name, created_at=NOW))
    session.commit()
    return ["events", "kids"]


@pytest.fixture
def policy(session):
    version = PolicyVersion(version="2026-01", effective_at=NOW - timedelta(days=30),
                            created_at=NOW - timedelta(days=30))
    session.add(version)
    session.commit()
    return version


@pytest.fixture
def patron(make_patron):
    return make_patron(first_name="Ana", email="ana@example.org", street="12 Aspen Way",
                       city="Castle Rock", postal_code="80104")


def page_url(ctx, patron):
    return f"/preferences/{link_token(ctx, LinkKind.PREFERENCES, patron)}"


def decide(session, ctx, patron, purpose, decision, *, topic=None, at=NOW, actor=Actor.PATRON):
    record_decision(session, ctx, DecisionRequest(
        purpose=purpose, topic=topic, decision=Decision(decision), source=Source.STAFF_DESK,
        actor=actor, occurred_at=at, patron=patron), now=NOW)
    session.commit()


def save(client, url, changes, *, headers=None):
    """Post the page's form as a browser would: everything as shown, with `changes` applied."""
    page = client.get(url, headers=headers)
    values = form_values(page.text)
    values.update(changes)
    return client.post(url, data=values, headers=headers, buffered=True)


def verdict(session, ctx, patron, purpose, topic=None):
    session.expire_all()  # the pages wrote through their own sessions
    standing = load_standings(session, [patron])[patron.id]
    return standing.verdict(ctx.catalog.get(purpose), topic, NOW.date())


def test_the_page_shows_every_purpose_with_the_decision_in_force_and_since_when(
        client, session, ctx, patron, topics):
    decide(session, ctx, patron, "postal_marketing", "opt_out", at=NOW - timedelta(days=30))
    decide(session, ctx, patron, "email_marketing", "opt_out", topic="kids",
           at=NOW - timedelta(days=2))
    response = client.get(page_url(ctx, patron))

    assert response.status_code == 200
    text = main_text(response.text)
    for label in ("All library email", "Library events", "Kids & teens", "Postal mail",
                  "Photos and video at library events", "Keeping your contact details current",
                  "Sharing your data to reach more people"):
        assert label in text
    assert "Postal mail Letters and flyers about programs and services, sent to your home " \
           "address. You don't get this since May 2, 2026" in text
    assert "Kids & teens Email on this topic. You don't get this since May 30, 2026" in text
    assert "Library events Email on this topic. You get this (you have not told us otherwise)" \
        in text
    assert "library card" not in text and "online services" not in text  # guardians' purposes
    assert form_values(response.text)["postal_marketing"] == "opt_out"
    assert form_values(response.text)["topic_events"] == "opt_in"
    assert "Email choices belong to the address" in text and "a•••@example.org" in text


def test_what_stops_the_patron_from_getting_something_is_said_plainly(client, ctx, make_patron):
    patron = make_patron(email="no.street@example.org")
    text = main_text(client.get(page_url(ctx, patron)).text)
    assert "Postal mail" in text and "We have no postal address for you." in text


def test_a_patron_without_an_email_address_decides_the_rest_and_gets_no_confirmation(
        app, client, session, ctx, make_patron, topics):
    patron = make_patron(email=None)
    page = client.get(page_url(ctx, patron))
    assert "We have no email address for you" in main_text(page.text)
    assert "email" not in form_values(page.text) and "topic_events" not in form_values(page.text)
    save(client, page_url(ctx, patron), {"contact_update": "opt_out"})
    assert [(e.purpose, e.decision) for e in events(session)] == [("contact_update", "opt_out")]
    assert sent_mail(app) == []


def test_saving_records_only_what_changed_and_emails_the_changes(
        app, client, session, ctx, patron, topics, policy):
    response = save(client, page_url(ctx, patron),
                    {"topic_kids": "opt_out", "photo_video": "opt_out"})

    assert response.status_code == 200
    text = main_text(response.text)
    assert "Your changes are saved" in text
    assert "Kids & teens: No, you don't get this" in text
    assert "Photos and video at library events: No, not allowed" in text
    recorded = events(session)
    assert [(e.purpose, e.topic, e.decision) for e in recorded] == [
        ("email_marketing", "kids", "opt_out"), ("photo_video", "", "opt_out")]
    assert {(e.source, e.actor, e.policy_version_id) for e in recorded} == {
        ("preference_center", "patron", policy.id)}
    assert recorded[0].evidence["token_id"]
    assert verdict(session, ctx, patron, "email_marketing", "kids").reason is Reason.OPTED_OUT
    assert verdict(session, ctx, patron, "email_marketing", "events").allowed

    [message] = sent_mail(app)
    assert message["To"] == "ana@example.org"
    body = message.get_body(("plain",)).get_content()
    assert "Kids & teens: No, you don't get this" in body
    assert "Photos and video at library events: No, not allowed" in body
    assert "Postal mail" not in body
    [row] = session.scalars(select(OutboxMessage)).all()
    assert (row.template, row.category) == ("preferences_saved", "transactional")


def test_saving_without_changes_records_nothing_and_sends_nothing(
        app, client, session, ctx, patron, topics):
    response = save(client, page_url(ctx, patron), {})
    assert "Nothing changed" in main_text(response.text)
    assert ledger_count(session) == 0
    assert sent_mail(app) == []


def test_an_answer_left_as_shown_does_not_overturn_a_decision_made_since_the_page_opened(
        client, session, ctx, patron, make_patron, topics):
    url = page_url(ctx, patron)
    values = form_values(client.get(url).text)  # every email answer shown as Yes
    assert values["email"] == "opt_in"
    housemate = make_patron(card="H0002", first_name="Bo", email="ana@example.org")
    decide(session, ctx, housemate, "email_marketing", "opt_out", at=NOW)  # meanwhile
    values["photo_video"] = "opt_out"

    client.post(url, data=values, buffered=True)  # the email answers untouched

    assert [(e.purpose, e.patron_id) for e in events(session)] == [
        ("email_marketing", housemate.id), ("photo_video", patron.id)]
    assert verdict(session, ctx, patron, "email_marketing").reason is Reason.OPTED_OUT


def test_saving_needs_the_forms_csrf_token(app, session, ctx, patron, topics):
    client = app.test_client()
    url = page_url(ctx, patron)
    values = form_values(client.get(url).text)
    del values["csrf_token"]
    values["photo_video"] = "opt_out"
    response = client.post(url, data=values)

    assert response.status_code == 400
    assert "This form has expired" in response.text
    assert ledger_count(session) == 0


def test_turning_off_all_email_stops_every_topic(client, session, ctx, patron, topics):
    response = save(client, page_url(ctx, patron),
                    {"email": "opt_out", "topic_events": "opt_in"})
    assert [(e.topic, e.decision) for e in events(session)] == [("", "opt_out")]
    values = form_values(response.text)
    assert (values["email"], values["topic_events"], values["topic_kids"]) == (
        "opt_out", "opt_out", "opt_out")
    text = main_text(response.text)
    assert "All library email: No, you don't get this" in text
    assert "Library events: No, you don't get this" in text


def test_one_topic_can_be_turned_back_on_after_all_email_was_stopped(
        app, client, session, ctx, patron, topics):
    decide(session, ctx, patron, "email_marketing", "opt_out", at=NOW - timedelta(days=1))
    response = save(client, page_url(ctx, patron), {"topic_events": "opt_in"})
    assert verdict(session, ctx, patron, "email_marketing", "events").allowed
    assert verdict(session, ctx, patron, "email_marketing", "kids").reason is Reason.OPTED_OUT
    assert main_text(response.text).count("Your changes are saved") == 1
    assert "Library events: Yes, you get this" in main_text(response.text)


def test_turning_all_email_back_on_starts_only_the_topics_the_form_shows_on(
        client, session, ctx, patron, topics):
    decide(session, ctx, patron, "email_marketing", "opt_out", at=NOW - timedelta(days=1))
    response = save(client, page_url(ctx, patron), {"email": "opt_in", "topic_events": "opt_in"})
    assert verdict(session, ctx, patron, "email_marketing").allowed
    assert verdict(session, ctx, patron, "email_marketing", "events").allowed
    assert verdict(session, ctx, patron, "email_marketing", "kids").reason is Reason.OPTED_OUT
    values = form_values(response.text)
    assert (values["email"], values["topic_events"], values["topic_kids"]) == (
        "opt_in", "opt_in", "opt_out")


def test_a_spam_suppressed_address_can_be_started_again_by_saying_yes(
        client, session, ctx, patron):
    from consent_service.models import AddressSuppression

    session.add(AddressSuppression(address_key=patron.address_key, reason="spam_report",
                                   suppressed_at=NOW - timedelta(days=5)))
    session.commit()
    page = client.get(page_url(ctx, patron))
    assert form_values(page.text)["email"] == "opt_out"
    assert "reported as spam" in main_text(page.text)
    save(client, page_url(ctx, patron), {"email": "opt_in"})
    assert verdict(session, ctx, patron, "email_marketing").allowed


def test_the_confirmation_email_is_in_the_patrons_language_whatever_the_page_shows(
        app, client, session, ctx, make_patron):
    patron = make_patron(email="lucia@example.org", preferred_language="es")
    url = page_url(ctx, patron)
    client.get(f"{url}?lang=en")  # the patron reads the page in English
    response = save(client, url, {"postal_marketing": "opt_out"})
    assert '<html lang="en">' in response.text
    [message] = sent_mail(app)
    assert "Correo postal: No, no lo recibe" in message.get_body(("plain",)).get_content()


def test_a_spanish_speaking_patron_sees_the_page_in_spanish(client, ctx, make_patron):
    patron = make_patron(preferred_language="es")
    response = client.get(page_url(ctx, patron))
    assert '<html lang="es">' in response.text
    assert "Sus preferencias" in response.text and "Correo postal" in response.text


# -- children -------------------------------------------------------------------------------------


def test_a_child_is_told_a_guardian_decides_and_can_only_say_no(
        client, session, ctx, make_patron):
    child = make_patron(email="family@example.org", birth_date=date(2018, 3, 1),
                        street="400 Elm St", city="Parker", postal_code="80134")
    decide(session, ctx, child, "photo_video", "opt_in", actor=Actor.GUARDIAN,
           at=NOW - timedelta(days=10))
    url = page_url(ctx, child)
    page = client.get(url)
    text = main_text(page.text)
    assert "Because you are under 13, a parent or guardian decides" in text
    shown = form_values(page.text)
    assert "photo_video" in shown and "postal_marketing" not in shown
    assert "A parent or guardian decides this." in text

    before = ledger_count(session)
    save(client, url, {"postal_marketing": "opt_in", "photo_video": "opt_out"})
    assert [(e.purpose, e.decision, e.actor) for e in events(session)[before:]] == [
        ("photo_video", "opt_out", "patron")]
    assert verdict(session, ctx, child, "postal_marketing").reason is (
        Reason.GUARDIAN_CONSENT_REQUIRED)


# -- Global Privacy Control -----------------------------------------------------------------------


def test_a_gpc_signal_on_the_page_records_one_opt_out_of_modeling_and_the_page_says_so(
        app, client, session, ctx, patron):
    url = page_url(ctx, patron)
    first = client.get(url, headers={"Sec-GPC": "1"})
    app.config["CLOCK"] = lambda: LATER
    client.get(url, headers={"Sec-GPC": "1"})

    [event] = events(session)
    assert (event.purpose, event.decision, event.source, event.actor) == (
        "third_party_modeling", "opt_out", "gpc", "patron")
    assert "Your browser sent a Global Privacy Control signal" in main_text(first.text)
    assert "on June 1, 2026 we recorded" in main_text(first.text)
    assert form_values(first.text)["third_party_modeling"] == "opt_out"
    assert verdict(session, ctx, patron, "third_party_modeling").reason is Reason.OPTED_OUT


def test_a_head_request_with_gpc_changes_nothing(client, session, ctx, patron):
    assert client.head(page_url(ctx, patron), headers={"Sec-GPC": "1"}).status_code == 200
    assert ledger_count(session) == 0


def test_a_page_without_gpc_changes_nothing(client, session, ctx, patron):
    client.get(page_url(ctx, patron))
    client.get(page_url(ctx, patron), headers={"Sec-GPC": "0"})
    assert ledger_count(session) == 0


def test_a_patron_who_allows_modeling_after_gpc_keeps_their_later_choice(
        app, client, session, ctx, patron):
    url = page_url(ctx, patron)
    client.get(url, headers={"Sec-GPC": "1"})
    app.config["CLOCK"] = lambda: LATER
    save(client, url, {"third_party_modeling": "opt_in"}, headers={"Sec-GPC": "1"})
    again = client.get(url, headers={"Sec-GPC": "1"})

    assert [(e.source, e.decision) for e in events(session)] == [
        ("gpc", "opt_out"), ("preference_center", "opt_in")]
    assert verdict(session, ctx, patron, "third_party_modeling").allowed
    assert "You allowed it again on this page on June 4, 2026" in main_text(again.text)


def test_a_gpc_signal_first_seen_on_a_save_is_recorded_too(app, session, ctx, patron):
    client = app.test_client()
    url = page_url(ctx, patron)
    values = form_values(client.get(url).text)  # this browser did not send GPC before
    values["photo_video"] = "opt_out"
    client.post(url, data=values, headers={"Sec-GPC": "1"})
    assert sorted((e.purpose, e.source) for e in events(session)) == [
        ("photo_video", "preference_center"), ("third_party_modeling", "gpc")]


def test_gpc_support_is_declared_at_the_well_known_address(client):
    response = client.get("/.well-known/gpc.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.json["gpc"] is True
    assert date.fromisoformat(response.json["lastUpdate"])


# -- bad links ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["tampered", "wrong kind", "unknown patron"])
def test_a_link_that_is_not_valid_gets_a_400_page_and_changes_nothing(
        client, session, ctx, patron, case):
    good = link_token(ctx, LinkKind.PREFERENCES, patron)
    token = {
        "tampered": tampered(good),
        "wrong kind": link_token(ctx, LinkKind.UNSUBSCRIBE, patron),
        "unknown patron": link_token(ctx, LinkKind.PREFERENCES, "p_nobody_we_know"),
    }[case]
    form_page = client.get("/preferences")  # the browser's session, for the CSRF token
    values = form_values(form_page.text)
    values["photo_video"] = "opt_out"

    for response in (client.get(f"/preferences/{token}", headers={"Sec-GPC": "1"}),
                     client.post(f"/preferences/{token}", data=values)):
        assert response.status_code == 400
        assert "This link does not work" in response.text
        assert 'action="/preferences"' in response.text
        assert response.headers["Cache-Control"] == "no-store"
    assert ledger_count(session) == 0


def test_an_expired_preference_link_says_so_and_offers_a_new_one(app, client, session, ctx,
                                                                 patron):
    url = page_url(ctx, patron)
    app.config["CLOCK"] = lambda: FAR_FUTURE
    response = client.get(url, headers={"Sec-GPC": "1"})
    assert response.status_code == 400
    assert "This link has expired" in response.text
    assert "Get a new link by email" in response.text
    assert ledger_count(session) == 0


def test_a_preference_link_lasts_thirty_days(app, client, ctx, patron):
    signed_on = datetime.now(UTC)  # links carry the real time they were signed at
    url = page_url(ctx, patron)
    app.config["CLOCK"] = lambda: signed_on + timedelta(days=29)
    assert client.get(url).status_code == 200
    app.config["CLOCK"] = lambda: signed_on + timedelta(days=31)
    assert "This link has expired" in client.get(url).text


SUBJECTS = {"en": "Your link to your library email and privacy choices",
            "es": "Su enlace para sus preferencias de correo y privacidad de la biblioteca"}


@pytest.mark.parametrize(("languages", "expected"), [(["es"], "es"), (["es", "es"], "es"),
                                                     (["es", "en"], "en")])
def test_email_me_a_link_writes_in_the_patrons_own_language_without_accept_language(
        app, client, make_patron, languages, expected):
    for number, language in enumerate(languages):
        make_patron(card=f"L{number}", first_name=f"P{number}", email="casa@example.org",
                    preferred_language=language)
    page = client.get("/preferences")  # no Accept-Language: the page is in English

    client.post("/preferences", data={**form_values(page.text), "email": "casa@example.org"},
                buffered=True)

    [message] = sent_mail(app)
    assert message["Subject"] == SUBJECTS[expected]
