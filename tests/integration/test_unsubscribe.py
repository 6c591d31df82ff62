"""Unsubscribe links: the page, the button, RFC 8058 one-click from a mail client, bad links."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from consent_service import runtime
from consent_service.domain.eligibility import Reason
from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.domain.tokens import LinkKind, LinkSigner
from consent_service.extensions import db
from consent_service.models import Patron, SuppressionSyncJob, Topic, UnsubscribeFeedback
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.standing import load_standings
from tests.conftest import NOW
from tests.integration.public_pages import (
    FAR_FUTURE,
    csrf_token,
    events,
    ledger_count,
    link_token,
    main_text,
    tampered,
)

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
def app(app_factory):
    return app_factory(CLOCK=lambda: NOW)


@pytest.fixture
def events_topic(session):
    session.add(Topic(key="events", name="Library events", created_at=NOW))
    session.commit()
    return "events"


@pytest.fixture
def patron(make_patron):
    return make_patron(first_name="Ana", email="ana.reyes@example.org")


def unsubscribe_url(ctx, patron, topic=None, kind=LinkKind.UNSUBSCRIBE):
    return f"/unsubscribe/{link_token(ctx, kind, patron, topic)}"


def email_verdict(session, ctx, patron, topic=None):
    session.expire_all()  # the pages wrote through their own sessions
    standing = load_standings(session, [patron])[patron.id]
    return standing.verdict(ctx.catalog.get("email_marketing"), topic, NOW.date())


def test_the_page_shows_the_masked_address_the_topic_one_button_and_a_preference_link(
        client, session, ctx, patron, events_topic):
    response = client.get(unsubscribe_url(ctx, patron, events_topic))

    assert response.status_code == 200
    text = main_text(response.text)
    assert "Stop email about Library events to a•••@example.org." in text
    assert "ana.reyes" not in response.text
    assert response.text.count("<button") == 1
    assert "Unsubscribe from Library events" in text
    assert 'href="/preferences/' in response.text
    assert ledger_count(session) == 0


def test_a_link_without_a_topic_stops_all_library_email(client, ctx, patron):
    text = main_text(client.get(unsubscribe_url(ctx, patron)).text)
    assert "Stop all email from the library to a•••@example.org." in text
    assert "Unsubscribe from all library email" in text


def test_get_and_head_never_change_anything(client, session, ctx, patron, events_topic):
    url = unsubscribe_url(ctx, patron, events_topic)
    for _ in range(3):
        assert client.get(url).status_code == 200
        head = client.head(url)
        assert head.status_code == 200 and head.data == b""
    assert ledger_count(session) == 0
    assert session.scalars(select(SuppressionSyncJob)).all() == []
    assert email_verdict(session, ctx, patron, events_topic).allowed


def test_the_button_records_the_opt_out_with_evidence_and_queues_the_sendgrid_suppression(
        client, session, ctx, patron, events_topic):
    url = unsubscribe_url(ctx, patron, events_topic)
    response = client.post(url, environ_base={"REMOTE_ADDR": "203.0.113.77"},
                           headers={"User-Agent": "Mozilla/5.0 " + "x" * 300})

    assert response.status_code == 200
    assert "You are unsubscribed" in response.text
    assert "We will not send email about Library events to a•••@example.org." in main_text(
        response.text)
    [event] = events(session)
    assert (event.purpose, event.topic, event.decision, event.source, event.actor) == (
        "email_marketing", "events", "opt_out", "unsubscribe_link", "patron")
    assert event.evidence["ip"] == "203.0.113.0/24"
    assert event.evidence["user_agent"] == ("Mozilla/5.0 " + "x" * 300)[:200]
    assert event.evidence["token_id"] == ctx.signer.verify(
        LinkKind.UNSUBSCRIBE, url.rsplit("/", 1)[1]).token_id
    [job] = session.scalars(select(SuppressionSyncJob)).all()
    assert (job.address_key, job.status) == (ctx.address_key("ana.reyes@example.org"), "pending")
    assert email_verdict(session, ctx, patron, events_topic).reason is Reason.OPTED_OUT
    assert email_verdict(session, ctx, patron).allowed  # only the one topic stopped


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_one_click_from_a_mail_client_works_without_cookies_or_csrf(
        app, session, ctx, patron, events_topic, encoding):
    mail_client = app.test_client(use_cookies=False)
    content_type = ("multipart/form-data" if encoding == "multipart"
                    else "application/x-www-form-urlencoded")
    response = mail_client.post(unsubscribe_url(ctx, patron, events_topic), data=ONE_CLICK,
                                content_type=content_type,
                                environ_base={"REMOTE_ADDR": "2001:db8:abcd:12::7"})

    assert response.status_code == 200
    assert "Location" not in response.headers
    [event] = events(session)
    assert (event.source, event.decision) == ("one_click", "opt_out")
    assert event.evidence["ip"] == "2001:db8:abcd::/48"
    assert len(session.scalars(select(SuppressionSyncJob)).all()) == 1


def test_a_second_unsubscribe_says_the_same_and_writes_nothing(
        app, client, session, ctx, patron, events_topic):
    url = unsubscribe_url(ctx, patron, events_topic)
    first = client.post(url)
    app.config["CLOCK"] = lambda: NOW + timedelta(hours=2)
    again = client.post(url)
    one_click_again = app.test_client(use_cookies=False).post(url, data=ONE_CLICK)

    assert first.status_code == again.status_code == one_click_again.status_code == 200
    assert main_text(again.text) == main_text(first.text)
    assert main_text(first.text).startswith(main_text(one_click_again.text)), "less the form"
    assert "In force since June 1, 2026." in main_text(again.text)
    assert len(events(session)) == 1


def test_a_one_click_answer_confirms_without_the_feedback_form_or_a_session(
        app, client, session, ctx, patron, events_topic):
    url = unsubscribe_url(ctx, patron, events_topic)
    one_click = app.test_client(use_cookies=False).post(url, data=ONE_CLICK)
    button = client.post(url)

    assert one_click.status_code == button.status_code == 200
    assert "We will not send email about Library events" in main_text(one_click.text)
    assert "Tell us why" not in one_click.text and 'name="csrf_token"' not in one_click.text
    assert "Set-Cookie" not in one_click.headers, "a mail provider's server gets no session"
    assert "Tell us why" in button.text and 'name="csrf_token"' in button.text


def test_unsubscribing_from_a_topic_already_stopped_by_all_email_writes_nothing(
        client, session, ctx, patron, events_topic):
    client.post(unsubscribe_url(ctx, patron))
    response = client.post(unsubscribe_url(ctx, patron, events_topic))
    assert response.status_code == 200
    assert [e.topic for e in events(session)] == [""]


def test_the_page_says_when_it_is_stopped_already(client, session, ctx, patron, events_topic):
    client.post(unsubscribe_url(ctx, patron, events_topic))
    text = main_text(client.get(unsubscribe_url(ctx, patron, events_topic)).text)
    assert "This is already stopped, since June 1, 2026." in text


def test_the_opt_out_holds_for_everyone_at_the_address(client, session, ctx, make_patron):
    parent = make_patron(email="home@example.org")
    partner = make_patron(email="home@example.org")
    client.post(unsubscribe_url(ctx, parent))
    assert email_verdict(session, ctx, partner).reason is Reason.OPTED_OUT


def test_a_patron_without_an_email_address_has_nothing_to_stop(client, session, ctx, make_patron):
    patron = make_patron(email=None)
    page = client.get(unsubscribe_url(ctx, patron))
    posted = client.post(unsubscribe_url(ctx, patron))
    assert page.status_code == posted.status_code == 200
    assert "We have no email address for you" in main_text(posted.text)
    assert ledger_count(session) == 0


def test_a_link_for_a_topic_the_library_no_longer_has_stops_all_email(
        client, session, ctx, patron):
    url = unsubscribe_url(ctx, patron, "retired-topic")
    assert "Stop all email from the library" in main_text(client.get(url).text)
    client.post(url)
    assert [(e.purpose, e.topic) for e in events(session)] == [("email_marketing", "")]


# -- bad links ------------------------------------------------------------------------------------


def bad_links(ctx, patron):
    good = link_token(ctx, LinkKind.UNSUBSCRIBE, patron)
    return {
        "tampered": tampered(good),
        "wrong kind": link_token(ctx, LinkKind.PREFERENCES, patron),
        "unknown patron": link_token(ctx, LinkKind.UNSUBSCRIBE, "p_nobody_we_know"),
        "garbage": "not-a-link",
    }


@pytest.mark.parametrize("case", ["tampered", "wrong kind", "unknown patron", "garbage"])
@pytest.mark.parametrize("method", ["get", "post"])
def test_a_link_that_is_not_valid_gets_a_400_page_offering_a_new_link(
        app, session, ctx, patron, case, method):
    token = bad_links(ctx, patron)[case]
    mail_client = app.test_client(use_cookies=False)
    response = getattr(mail_client, method)(f"/unsubscribe/{token}", data=ONE_CLICK
                                            if method == "post" else None)

    assert response.status_code == 400
    assert "This link does not work" in response.text
    assert "Nothing was changed." in response.text
    assert 'action="/preferences"' in response.text and 'name="email"' in response.text
    assert response.headers["Cache-Control"] == "no-store"
    assert ledger_count(session) == 0


@pytest.mark.parametrize("method", ["get", "post"])
def test_an_expired_link_says_it_expired_and_records_nothing(app, client, session, ctx, patron,
                                                             method):
    url = unsubscribe_url(ctx, patron)
    app.config["CLOCK"] = lambda: FAR_FUTURE
    response = getattr(client, method)(url)

    assert response.status_code == 400
    assert "This link has expired" in response.text
    assert 'action="/preferences"' in response.text
    assert ledger_count(session) == 0


def test_a_link_signed_with_a_rotated_out_key_still_unsubscribes(app_factory):
    app = app_factory(CLOCK=lambda: NOW, SECRET_KEY="the-new-key",
                      SECRET_KEY_FALLBACKS=["the-old-key"])
    with app.app_context():
        ctx = runtime.context(app)
        patron = Patron(card_number="R1", email="rotated@example.org",
                        address_key=ctx.address_key("rotated@example.org"), created_at=NOW,
                        updated_at=NOW)
        db.session.add(patron)
        db.session.commit()
        public_id = patron.public_id
    old = LinkSigner(["the-old-key"], {}).sign(LinkKind.UNSUBSCRIBE, public_id)
    forgotten = LinkSigner(["a-key-nobody-kept"], {}).sign(LinkKind.UNSUBSCRIBE, public_id)
    client = app.test_client()

    assert client.post(f"/unsubscribe/{old}").status_code == 200
    assert client.get(f"/unsubscribe/{forgotten}").status_code == 400
    with app.app_context():
        assert [e.source for e in events(db.session)] == ["unsubscribe_link"]


# -- tell us why ----------------------------------------------------------------------------------


def test_the_reason_is_stored_beside_the_opt_out_event(client, session, ctx, patron, events_topic):
    url = unsubscribe_url(ctx, patron, events_topic)
    confirmation = client.post(url)
    response = client.post(f"{url}/feedback", data={
        "csrf_token": csrf_token(confirmation.text), "reason": "too_many",
        "text": "  Three emails a week is a lot.  "})

    assert response.status_code == 200
    assert "Thank you" in response.text
    [event] = events(session)
    feedback = session.get(UnsubscribeFeedback, event.id)
    assert (feedback.reason_code, feedback.text) == ("too_many", "Three emails a week is a lot.")
    assert len(events(session)) == 1  # the event itself is untouched; the reason sits beside it


def test_the_reason_form_needs_its_csrf_token(app, client, session, ctx, patron, events_topic):
    url = unsubscribe_url(ctx, patron, events_topic)
    client.post(url)
    response = app.test_client().post(f"{url}/feedback", data={"reason": "other"})
    assert response.status_code == 400
    assert "This form has expired" in response.text
    assert session.scalars(select(UnsubscribeFeedback)).all() == []


def test_a_second_reason_for_the_same_opt_out_is_not_stored(client, session, ctx, patron):
    url = unsubscribe_url(ctx, patron)
    token = csrf_token(client.post(url).text)
    for reason in ("not_relevant", "other"):
        assert client.post(f"{url}/feedback",
                           data={"csrf_token": token, "reason": reason}).status_code == 200
    assert [f.reason_code for f in session.scalars(select(UnsubscribeFeedback))] == [
        "not_relevant"]


def test_an_overlong_or_unknown_reason_is_refused_with_the_form_again(client, session, ctx, patron):
    url = unsubscribe_url(ctx, patron)
    token = csrf_token(client.post(url).text)
    too_long = client.post(f"{url}/feedback",
                           data={"csrf_token": token, "reason": "other", "text": "x" * 501})
    unknown = client.post(f"{url}/feedback", data={"csrf_token": token, "reason": "spite"})
    assert too_long.status_code == unknown.status_code == 400
    assert "Tell us why" in too_long.text
    assert session.scalars(select(UnsubscribeFeedback)).all() == []


@pytest.mark.parametrize("text", ["NUL \x00 here", "mirror \u202e text", "bell \x07"])
def test_feedback_with_a_control_character_is_refused_with_one_line_and_nothing_stored(
        client, session, ctx, patron, text):
    url = unsubscribe_url(ctx, patron)
    token = csrf_token(client.post(url).text)

    response = client.post(f"{url}/feedback",
                           data={"csrf_token": token, "reason": "other", "text": text})

    assert response.status_code == 400
    assert "it cannot be stored" in main_text(response.text)
    assert session.scalars(select(UnsubscribeFeedback)).all() == []


def test_feedback_line_breaks_are_kept_as_line_feeds(client, session, ctx, patron):
    url = unsubscribe_url(ctx, patron)
    token = csrf_token(client.post(url).text)
    client.post(f"{url}/feedback",
                data={"csrf_token": token, "reason": "other", "text": "one\r\ntwo"})
    assert [f.text for f in session.scalars(select(UnsubscribeFeedback))] == ["one\ntwo"]


def test_no_reason_is_kept_when_the_patron_has_opted_back_in(client, session, ctx, patron):
    url = unsubscribe_url(ctx, patron)
    token = csrf_token(client.post(url).text)
    record_decision(session, ctx, DecisionRequest(
        purpose="email_marketing", decision=Decision.OPT_IN, source=Source.STAFF_DESK,
        actor=Actor.STAFF, occurred_at=NOW + timedelta(minutes=1), patron=patron),
        now=NOW + timedelta(minutes=1))
    session.commit()
    response = client.post(f"{url}/feedback", data={"csrf_token": token, "reason": "other"})
    assert response.status_code == 200
    assert session.scalars(select(UnsubscribeFeedback)).all() == []


# -- language -------------------------------------------------------------------------------------


def test_a_spanish_speaking_patron_sees_the_page_in_spanish(client, ctx, make_patron, events_topic):
    patron = make_patron(email="lucia@example.org", preferred_language="es")
    response = client.get(unsubscribe_url(ctx, patron, events_topic))
    assert '<html lang="es">' in response.text
    assert "Dejar de recibir correos sobre Library events en l•••@example.org." in response.text
    confirmation = client.post(unsubscribe_url(ctx, patron, events_topic))
    assert "Su suscripción está cancelada" in confirmation.text
    assert "1 de junio de 2026" in confirmation.text


def test_the_language_switch_overrides_the_patrons_language(client, ctx, make_patron):
    patron = make_patron(preferred_language="es")
    url = unsubscribe_url(ctx, patron)
    switched = client.get(f"{url}?lang=en")
    assert '<html lang="en">' in switched.text
    assert '<html lang="en">' in client.get(url).text  # remembered in a cookie


def test_a_patron_removed_between_opening_the_link_and_the_click_gets_the_bad_link_answer(
        session, ctx, make_patron, events_topic):
    """The link was opened (the page read the patron), then the patron's record was removed before
    the button was pressed: the opt-out is refused as a link that no longer names anybody, and
    nothing is written."""
    from consent_service.domain.tokens import InvalidLinkError
    from consent_service.services.unsubscribe import open_unsubscribe_link, unsubscribe

    patron = make_patron(first_name="Ana", email="gone@example.org")
    token = link_token(ctx, LinkKind.UNSUBSCRIBE, patron, events_topic)
    link = open_unsubscribe_link(session, ctx, token, now=NOW)
    session.delete(session.get(Patron, patron.id))
    session.commit()

    with pytest.raises(InvalidLinkError, match="this link is not valid"):
        unsubscribe(session, ctx, link, source=Source.UNSUBSCRIBE_LINK, evidence={}, now=NOW)
    session.rollback()
    assert ledger_count(session) == 0
