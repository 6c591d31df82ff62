"""Consent requests for children: who is asked (import, staff linking, ages and birthdays), links,
reminders, expiry, and what a child may be exported for before and after a guardian answers."""

from __future__ import annotations

import csv
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from consent_service.domain.tokens import LinkKind
from consent_service.models import GuardianLink, OutboxMessage
from consent_service.services.export import export_contacts
from consent_service.services.patron_import import import_patrons
from tests.conftest import NOW
from tests.integration.guardians.helpers import (
    CHILD_BORN,
    answer,
    invoke,
    last_token,
    link,
    links_of,
    mail_to,
    requests_of,
    text_of,
    tokens_in,
)
from tests.integration.public_pages import main_text

EXPIRED = NOW + timedelta(days=14, seconds=1)


def at_noon_in_denver(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 18, tzinfo=UTC)


def notices(session) -> list[OutboxMessage]:
    session.expire_all()
    return list(session.scalars(select(OutboxMessage).where(
        OutboxMessage.template == "guardian_notice").order_by(OutboxMessage.id)))


# -- who is asked ---------------------------------------------------------------------------------

PATRONS_CSV = "\n".join([
    "card_number,first_name,email,birth_date,preferred_language,guardian_card_number,"
    "guardian_email,status",
    "G1,Grace,grace@example.org,1980-01-01,es,,,active",
    "K1,Kai,,2019-05-05,en,G1,,active",
    "K2,Zoe,,2016-02-29,en,,zoe.dad@example.org,active",
    "T1,Tess,,2011-01-01,en,,tess.mom@example.org,active",
    "A1,Adam,,2000-01-01,en,,adam.mom@example.org,active",
    "K3,Ivo,,2019-01-01,en,,ivo.mom@example.org,inactive",
]) + "\n"


def test_importing_children_with_guardians_asks_each_guardian_once(session, ctx, tmp_path):
    path = tmp_path / "patrons.csv"
    path.write_text(PATRONS_CSV, encoding="utf-8")

    import_patrons(session, ctx, path, now=NOW, skip_invalid=False)

    sent = {(m.to_address, m.subject, m.category) for m in notices(session)}
    assert sent == {
        ("grace@example.org", "Se necesita su consentimiento para Kai en Example County Library",
         "notice"),
        ("zoe.dad@example.org", "Your consent is needed for Zoe at Example County Library",
         "notice"),
        ("tess.mom@example.org", "Your consent is needed for Tess at Example County Library",
         "notice"),
    }  # not Adam (an adult) nor Ivo (an inactive card)
    tess = next(m for m in notices(session) if m.to_address == "tess.mom@example.org")
    assert "A library card" in tess.text_body and "Online services" not in tess.text_body

    import_patrons(session, ctx, path, now=NOW + timedelta(days=1), skip_invalid=False)
    assert len(notices(session)) == 3  # the links exist already: nobody is asked again


def test_linking_again_sends_nothing_new_and_a_guardian_without_an_address_cannot_be_asked(
        app, runner, session, make_patron, maya):
    first = link(runner, maya, email="dad@example.org")
    [request] = requests_of(session, maya)
    assert first.output == f"linked; consent request {request.public_id} sent to d•••@example.org\n"
    again = link(runner, maya, email="DAD@example.org")
    assert again.output.startswith("already linked; consent request ")
    assert len(mail_to(app, "dad@example.org")) == 1

    no_email = make_patron(card="G0777", email=None)
    result = link(runner, maya, card=no_email.card_number)
    assert result.output == ("linked; no consent request (the child needs none, or the guardian "
                             "has no email address)\n")
    assert len(links_of(session, maya)) == 2 and len(requests_of(session, maya)) == 1


@pytest.mark.parametrize(("args", "message"), [
    (["K0001"], "give either a guardian card number or a guardian email address"),
    (["K0001", "--guardian-card", "G0001", "--guardian-email", "a@example.org"],
     "give either a guardian card number or a guardian email address"),
    (["K0001", "--guardian-card", "K0001"], "a patron cannot be their own guardian"),
    (["K0001", "--guardian-card", "nope"], "no patron with card number 'nope'"),
    (["nope", "--guardian-email", "a@example.org"], "no patron with card number 'nope'"),
])
def test_linking_refuses_what_it_cannot_do_with_one_line(runner, session, maya, pat, args,
                                                         message):
    result = invoke(runner, "guardians", "link", *args)
    assert (result.exit_code, result.output) == (1, f"Error: {message}\n")
    assert links_of(session, maya) == []


def test_a_bad_guardian_email_is_refused_with_one_line(runner, maya):
    result = invoke(runner, "guardians", "link", "K0001", "--guardian-email", "not-an-address")
    assert result.exit_code == 1
    assert result.output.startswith("Error: not a valid email address")
    assert result.output.count("\n") == 1


@pytest.mark.parametrize(("birth_date", "day", "asked"), [
    (date(2009, 6, 10), date(2026, 6, 9), True),  # the day before the 17th birthday
    (date(2009, 6, 10), date(2026, 6, 10), False),  # the birthday: the card needs nobody
    (date(2009, 6, 10), date(2026, 6, 11), False),
    (date(2012, 2, 29), date(2029, 2, 28), True),  # 29 February: 16 until 1 March
    (date(2012, 2, 29), date(2029, 3, 1), False),
])
def test_a_minor_is_asked_for_until_their_17th_birthday(
        app, runner, session, clock, make_patron, birth_date, day, asked):
    teen = make_patron(card="T0001", first_name="Tess", email=None, birth_date=birth_date)
    clock.at = at_noon_in_denver(day)
    link(runner, teen, email="tess.mom@example.org")
    assert len(requests_of(session, teen)) == (1 if asked else 0)


def test_age_is_taken_on_the_librarys_day_not_in_utc(app, runner, session, clock, make_patron):
    teen = make_patron(card="T0002", email=None, birth_date=date(2009, 6, 10))
    clock.at = datetime(2026, 6, 10, 3, 0, tzinfo=UTC)  # still 9 June in Denver: 16
    link(runner, teen, email="tess.mom@example.org")
    assert len(requests_of(session, teen)) == 1


def test_a_minor_with_card_permission_is_not_asked_again(app, runner, client, session,
                                                         make_patron):
    teen = make_patron(card="T0003", first_name="Ren", email=None, birth_date=date(2011, 1, 15))
    link(runner, teen, email="ren.dad@example.org")
    answer(client, last_token(app, "ren.dad@example.org", "guardian"), ["minor_card"])
    link(runner, teen, email="ren.mom@example.org")
    assert [r.status for r in requests_of(session, teen)] == ["answered"]


@pytest.mark.parametrize(("birth_date", "day", "offered"), [
    (date(2013, 6, 10), date(2026, 6, 9), 7),  # 12: everything (no email address: no email row)
    (date(2013, 6, 10), date(2026, 6, 10), 1),  # 13 today: the card only
    (date(2012, 2, 29), date(2025, 2, 28), 7),  # a common year: 12 until 1 March
    (date(2012, 2, 29), date(2025, 3, 1), 1),
])
def test_on_the_13th_birthday_the_guardians_page_offers_only_the_card(
        app, runner, client, clock, make_patron, birth_date, day, offered):
    child = make_patron(card="K0500", first_name="Ana", email=None, birth_date=birth_date)
    clock.at = at_noon_in_denver(day) - timedelta(days=2)
    link(runner, child, email="ana.mom@example.org")
    clock.at = at_noon_in_denver(day)

    page = client.get(f"/guardian/{last_token(app, 'ana.mom@example.org', 'guardian')}")

    assert page.text.count('type="checkbox" name="allow"') == offered


def test_a_guardians_decisions_stay_in_force_when_the_child_turns_13(
        app, runner, client, session, ctx, clock, make_patron):
    child = make_patron(card="K0600", first_name="Leap", email=None, birth_date=date(2012, 2, 29),
                        street="1 Main St", city="Golden", postal_code="80401")
    clock.at = at_noon_in_denver(date(2025, 2, 20))
    link(runner, child, email="leap.dad@example.org")
    answer(client, last_token(app, "leap.dad@example.org", "guardian"),
           ["photo_video", "child_programs"])
    family = last_token(app, "leap.dad@example.org", "family")

    # the day before the 13th birthday (28 February), the day of (1 March) and after
    for day in (date(2025, 2, 28), date(2025, 3, 1), date(2025, 3, 2)):
        rows, left_out = export(session, ctx, "photo_video", now=at_noon_in_denver(day))
        assert child.public_id in rows  # the guardian's yes stands
    # postal mail, left unticked, was nobody's decision: from 13 the teen's own (opt-out) basis
    rows, left_out = export(session, ctx, "postal_marketing",
                            now=at_noon_in_denver(date(2025, 2, 28)))
    assert left_out[child.public_id] == "guardian_consent_required"
    rows, left_out = export(session, ctx, "postal_marketing",
                            now=at_noon_in_denver(date(2025, 3, 1)))
    assert child.public_id in rows
    unanswered = make_patron(card="K0601", email=None, birth_date=date(2012, 2, 29))
    before, after = (export(session, ctx, "photo_video", now=at_noon_in_denver(day))
                     for day in (date(2025, 2, 28), date(2025, 3, 1)))
    assert before[1][unanswered.public_id] == "guardian_consent_required"
    assert unanswered.public_id in after[0]  # at 13 the teen decides, and has not said no

    clock.at = at_noon_in_denver(date(2025, 3, 1))
    text = main_text(client.get(f"/family/{family}").text)
    assert "What Leap decides now" in text
    assert ("Photos and video: Allowed since February 20, 2025 (decided by a parent or guardian)"
            in text)


# -- links, reminders, expiry ---------------------------------------------------------------------


def test_links_guardian_prints_one_fresh_link_for_the_childs_open_request(runner, session, ctx,
                                                                          maya):
    link(runner, maya, email="dad@example.org")
    [request] = requests_of(session, maya)

    result = invoke(runner, "links", "guardian", "K0001")

    assert result.exit_code == 0 and result.output.count("\n") == 1
    url = urlsplit(result.output.strip())
    assert (url.scheme, url.netloc, url.path.split("/")[1]) == (
        "https", "consent.example.org", "guardian")
    claims = ctx.signer.verify(LinkKind.GUARDIAN, url.path.split("/")[2], now=NOW)
    assert (claims.patron_id, claims.ref) == (maya.public_id, request.public_id)
    assert len(requests_of(session, maya)) == 1


def test_once_expiry_deleted_an_email_guardian_there_is_nobody_to_link_to(
        app, runner, session, clock, maya):
    link(runner, maya, email="dad@example.org")
    clock.at = EXPIRED
    invoke(runner, "guardians", "expire")

    result = invoke(runner, "links", "guardian", "K0001")

    assert result.exit_code == 1
    assert result.output == ("Error: patron K0001 has no guardian linked (link one with "
                             "`flask guardians link`)\n")


def test_links_guardian_asks_again_a_guardian_patron_whose_request_expired(
        app, runner, session, ctx, clock, maya, pat):
    link(runner, maya, card=pat.card_number)
    clock.at = EXPIRED
    invoke(runner, "guardians", "expire")

    result = invoke(runner, "links", "guardian", "K0001")

    assert result.exit_code == 0
    assert [r.status for r in requests_of(session, maya)] == ["expired", "pending"]
    assert len(mail_to(app, "pat@example.org", "consent is needed")) == 2
    [token] = tokens_in(result.output, "guardian")
    claims = ctx.signer.verify(LinkKind.GUARDIAN, token, now=clock.at)
    assert claims.ref == requests_of(session, maya)[1].public_id


@pytest.mark.parametrize(("setup", "message"), [
    ("adult", "patron A0001 needs no guardian's consent"),
    ("no guardian", "patron K0700 has no guardian linked (link one with `flask guardians link`)"),
    ("no address", "no guardian of patron K0700 has an email address"),
    ("unknown", "no patron with card number 'nope'"),
])
def test_links_guardian_says_in_one_line_why_it_has_no_link(runner, session, make_patron, setup,
                                                             message):
    make_patron(card="A0001", birth_date=date(1990, 1, 1))
    child = make_patron(card="K0700", email=None, birth_date=CHILD_BORN)
    if setup == "no address":
        link(runner, child, card=make_patron(card="G0700", email=None).card_number)
    card = {"adult": "A0001", "unknown": "nope"}.get(setup, "K0700")
    result = invoke(runner, "links", "guardian", card)
    assert (result.exit_code, result.output) == (1, f"Error: {message}\n")


def test_remind_resends_only_pending_unexpired_requests_with_fresh_links(
        app, runner, client, session, clock, make_patron):
    waiting = make_patron(card="K0801", first_name="Wes", email=None, birth_date=CHILD_BORN)
    answered = make_patron(card="K0802", first_name="Ada", email=None, birth_date=CHILD_BORN)
    late = make_patron(card="K0803", first_name="Lou", email=None, birth_date=CHILD_BORN)
    clock.at = NOW - timedelta(days=20)
    link(runner, late, email="lou.mom@example.org")
    clock.at = NOW
    link(runner, waiting, email="wes.mom@example.org")
    link(runner, answered, email="ada.mom@example.org")
    answer(client, last_token(app, "ada.mom@example.org", "guardian"), ["child_programs"])
    clock.at = NOW + timedelta(days=8)  # the first links have expired; the requests have not

    result = invoke(runner, "guardians", "remind")

    assert result.output == "sent 1 reminder(s)\n"
    [_, reminder] = mail_to(app, "wes.mom@example.org")
    assert "This is a reminder: we have not had your answer yet." in text_of(reminder)
    assert "If we have no answer by June 15, 2026" in text_of(reminder)
    assert requests_of(session, waiting)[0].last_sent_at == NOW + timedelta(days=8)
    assert client.get(f"/guardian/{tokens_in(text_of(reminder), 'guardian')[0]}"
                      ).status_code == 200
    assert len(mail_to(app, "lou.mom@example.org")) == 1
    assert len(mail_to(app, "ada.mom@example.org", "consent is needed")) == 1


def test_expiry_deletes_the_contact_details_collected_for_an_unanswered_request(
        app, runner, client, session, clock, make_patron, maya, pat):
    by_email = make_patron(card="K0901", first_name="Em", email=None, birth_date=CHILD_BORN)
    answered = make_patron(card="K0902", first_name="Al", email=None, birth_date=CHILD_BORN)
    link(runner, maya, card=pat.card_number)  # a guardian patron: the link stays
    link(runner, by_email, email="em.dad@example.org")
    link(runner, answered, email="al.dad@example.org")
    answer(client, last_token(app, "al.dad@example.org", "guardian"), ["child_programs"])
    old_link = last_token(app, "em.dad@example.org", "guardian")

    clock.at = NOW + timedelta(days=13)
    assert invoke(runner, "guardians", "expire").output == (
        "expired 0 request(s); deleted 0 guardian email address(es)\n")
    clock.at = EXPIRED
    result = invoke(runner, "guardians", "expire")

    assert result.output == "expired 2 request(s); deleted 1 guardian email address(es)\n"
    for child, status in ((maya, "expired"), (by_email, "expired"), (answered, "answered")):
        [request] = requests_of(session, child)
        assert request.status == status
        assert (request.to_email is None) == (status == "expired")
    assert links_of(session, by_email) == []
    assert [lk.guardian_id for lk in links_of(session, maya)] == [pat.id]
    assert [lk.guardian_email for lk in links_of(session, answered)] == ["al.dad@example.org"]
    session.expire_all()
    assert session.scalar(select(GuardianLink).where(
        GuardianLink.guardian_email == "em.dad@example.org")) is None
    clock.at = NOW + timedelta(days=3)  # the link itself has not expired, the request has
    assert client.get(f"/guardian/{old_link}").status_code == 400


# -- eligibility before and after a guardian's consent --------------------------------------------


def export(session, ctx, purpose, *, topic=None, now=NOW):
    """Export to files: the patron ids in the list, and those left out with the reason."""
    with tempfile.TemporaryDirectory() as folder:
        output, excluded = Path(folder) / "out.csv", Path(folder) / "excluded.csv"
        export_contacts(session, ctx, purpose=purpose, topic=topic, output=output,
                        excluded=excluded, created_by="test", now=now)
        with output.open(newline="") as handle:
            rows = {row["patron_id"] for row in csv.DictReader(handle)}
        with excluded.open(newline="") as handle:
            left_out = {row["patron_id"]: row["reason"] for row in csv.DictReader(handle)}
    return rows, left_out


PURPOSES = [("email_marketing", "events"), ("postal_marketing", None), ("photo_video", None),
            ("child_programs", None), ("contact_update", None), ("third_party_modeling", None)]


def test_a_child_is_in_no_export_until_a_guardian_opts_in_and_no_vendor_export_without_its_tick(
        app, runner, client, session, ctx, clock, make_patron, topics):
    child = make_patron(card="K1000", first_name="Kim", email="kim@example.org",
                        birth_date=CHILD_BORN, street="1 Main St", city="Golden",
                        postal_code="80401")
    link(runner, child, email="kim.mom@example.org")
    for purpose, topic in PURPOSES:
        rows, left_out = export(session, ctx, purpose, topic=topic)
        assert child.public_id not in rows
        assert left_out[child.public_id] == "guardian_consent_required", purpose

    token = last_token(app, "kim.mom@example.org", "guardian")
    answer(client, token, ["email_marketing:events", "postal_marketing", "photo_video",
                           "child_programs"])
    for purpose, topic in PURPOSES[:4]:
        assert child.public_id in export(session, ctx, purpose, topic=topic)[0], purpose
    for vendor in ("contact_update", "third_party_modeling"):
        rows, left_out = export(session, ctx, vendor)
        assert child.public_id not in rows
        assert left_out[child.public_id] == "guardian_consent_required"  # left unticked
    rows, left_out = export(session, ctx, "email_marketing", topic="kids_teens")
    assert left_out[child.public_id] == "guardian_consent_required"  # only the topic ticked

    clock.at = NOW + timedelta(hours=1)
    answer(client, token, ["email_marketing:events", "postal_marketing", "photo_video",
                           "child_programs", "contact_update"])
    assert child.public_id in export(session, ctx, "contact_update", now=clock.at)[0]
    assert child.public_id not in export(session, ctx, "third_party_modeling", now=clock.at)[0]
