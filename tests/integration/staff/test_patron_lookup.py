"""Looking patrons up: search by card, email or name; the patron page (decisions in force,
eligibility in words, the ledger, guardians); every view written to the access log."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from consent_service.domain.eligibility import Reason
from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.domain.purposes import PurposeKey
from consent_service.models import PatronAccess
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.guardians.staff import link_guardian
from consent_service.web.staff_words import REASON_WORDS, SOURCE_WORDS
from tests.conftest import NOW
from tests.integration.public_pages import main_text
from tests.integration.staff.desk import access_log, alert, arrange_world, signed_in

POSTAL = PurposeKey.POSTAL_MARKETING.value
EMAIL = PurposeKey.EMAIL_MARKETING.value


def decide(session, ctx, patron, purpose, decision, *, at=NOW, topic=None, source=Source.GPC,
           actor=Actor.PATRON):
    record_decision(session, ctx, DecisionRequest(
        purpose=purpose, topic=topic, decision=Decision(decision), source=source, actor=actor,
        occurred_at=at, patron=patron), now=NOW)
    session.commit()


def search(client, text):
    return client.get("/staff/patrons", query_string={"q": text})


def names_found(response) -> list[str]:
    text = main_text(response.text)
    return text.split("Name Card number Card ", 1)[1].split() if "Name Card number" in text else []


@pytest.fixture
def world(session, make_patron):
    return arrange_world(session, make_patron)


def test_a_card_number_finds_the_patron_and_links_their_record(client, session, world):
    signed_in(client, session, "staff")
    response = search(client, " 21000001 ")
    assert response.status_code == 200
    assert names_found(response) == ["Reyes,", "Ana", "21000001", "active"]
    assert f'href="/staff/patrons/{world.patron.public_id}"' in response.text


def test_an_email_address_finds_everyone_at_it_however_it_is_typed(client, session, world,
                                                                   make_patron):
    make_patron(card="21000009", first_name="Luis", last_name="Reyes",
                email="ana.reyes@example.org")
    signed_in(client, session, "staff")
    found = names_found(search(client, "  Ana.Reyes@EXAMPLE.org"))
    assert found == ["Reyes,", "Ana", "21000001", "active", "Reyes,", "Luis", "21000009", "active"]


def test_names_match_from_their_beginning_case_insensitively(client, session, world,
                                                             make_patron):
    make_patron(card="21000010", first_name="Ana", last_name="Lopez", email=None)
    signed_in(client, session, "staff")
    assert [n for n in names_found(search(client, "rey")) if n.isdigit()] == ["21000001"]
    assert [n for n in names_found(search(client, "ANA")) if n.isdigit()] == ["21000010",
                                                                              "21000001"]
    assert [n for n in names_found(search(client, "ana lop")) if n.isdigit()] == ["21000010"]
    assert names_found(search(client, "eyes")) == []  # not from the middle of a name
    nothing = search(client, "%")  # a wildcard is a character like any other
    assert "No patron matches “%”" in main_text(nothing.text)


def test_a_name_search_shows_fifty_patrons_and_says_more_match(client, session, make_patron):
    for n in range(51):
        make_patron(card=f"3000{n:04d}", first_name=f"Kim{n:02d}", last_name="Smith", email=None)
    signed_in(client, session, "staff")
    text = main_text(search(client, "smith").text)
    assert "50 patrons found; more match than are shown" in text
    assert "Kim49" in text and "Kim50" not in text


def test_text_with_an_at_sign_that_is_no_address_is_one_line_400(client, session, world):
    signed_in(client, session, "staff")
    response = search(client, "ana@")
    assert response.status_code == 400
    assert alert(response.text).startswith("Not a valid email address")


def test_the_patron_page_shows_each_decision_in_force_with_its_source_and_time(
        client, session, ctx, world):
    decide(session, ctx, world.patron, POSTAL, "opt_out", at=NOW - timedelta(days=3),
           source=Source.PREFERENCE_CENTER)
    decide(session, ctx, world.patron, EMAIL, "opt_out", topic="events",
           source=Source.UNSUBSCRIBE_LINK, at=NOW - timedelta(days=1))
    signed_in(client, session, "staff")
    text = main_text(client.get(f"/staff/patrons/{world.patron.public_id}").text)
    in_force = text.split("Decisions in force", 1)[1].split("What the library may do today")[0]
    assert ("Email about programs, services and events Library events no (opt out) patron "
            "Unsubscribe link 2026-05-31 06:00 MDT their email address") in in_force
    assert ("Postal mail about programs — no (opt out) patron Preference center "
            "2026-05-29 06:00 MDT this patron's record") in in_force


def test_eligibility_is_given_per_purpose_and_topic_with_the_reason_in_words(
        client, session, ctx, world):
    decide(session, ctx, world.patron, EMAIL, "opt_out", topic="events")
    signed_in(client, session, "staff")
    text = main_text(client.get(f"/staff/patrons/{world.child.public_id}").text)
    assert ("Being photographed or filmed at library activities — no a minor: needs a "
            "parent's or guardian's yes") in text
    text = main_text(client.get(f"/staff/patrons/{world.patron.public_id}").text)
    assert "Email about programs, services and events Library events no said no (opted out)" in text
    assert "Email about programs, services and events Kids & teens yes" in text
    assert "A library card for a patron under 17 — does not apply only for patrons under 17" in text


def test_every_reason_and_source_has_words_for_staff():
    assert set(REASON_WORDS) == set(Reason)
    assert set(SOURCE_WORDS) == set(Source)


def test_the_ledger_history_is_newest_first_and_paged(client, session, ctx, world):
    for n in range(55):
        decide(session, ctx, world.patron, POSTAL, "opt_out" if n % 2 else "opt_in",
               at=NOW - timedelta(days=60 - n))
    signed_in(client, session, "staff")
    url = f"/staff/patrons/{world.patron.public_id}"
    first = main_text(client.get(url).text).split("Ledger history", 1)[1]
    assert first.startswith(" 55 events about this patron or their email address, newest first; "
                            "page 1 of 2.")
    assert first.index("2026-05-26") < first.index("2026-05-25")  # newest first
    assert "2026-04-06" not in first  # the five oldest are on page 2
    second = main_text(client.get(url, query_string={"page": 2}).text).split("Ledger history")[1]
    assert second.count("Postal mail about programs") == 5 and "2026-04-06" in second


def test_guardians_show_both_ways_with_the_requests_waiting_for_an_answer(
        client, session, ctx, world, make_patron):
    niece = make_patron(card="21000011", first_name="Lia", last_name="Lopez", email=None,
                        birth_date=world.child.birth_date)
    link_guardian(session, ctx, niece.card_number, guardian_email="aunt@example.org", now=NOW)
    signed_in(client, session, "staff")
    niece_page = main_text(client.get(f"/staff/patrons/{niece.public_id}").text)
    assert "Guardians of this patron aunt@example.org (no library card yet)" in niece_page
    assert ("For Lia Lopez (card 21000011), sent to aunt@example.org on 2026-06-01 06:00 MDT; "
            "expires 2026-06-15 06:00 MDT") in niece_page
    guardian_page = main_text(client.get(f"/staff/patrons/{world.guardian.public_id}").text)
    assert "This patron is the guardian of Maya Lopez (card 21000003)" in guardian_page
    child_page = main_text(client.get(f"/staff/patrons/{world.child.public_id}").text)
    assert "Guardians of this patron Pat Lopez (card 21000002)" in child_page


def test_every_view_of_a_patron_page_is_written_to_the_access_log(client, session, world, clock):
    staff, _ = signed_in(client, session, "staff")
    client.get(f"/staff/patrons/{world.patron.public_id}")
    clock.at = NOW + timedelta(minutes=5)
    client.get(f"/staff/patrons/{world.patron.public_id}", query_string={"page": 2})
    client.get(f"/staff/patrons/{world.child.public_id}")
    assert access_log(session) == [(staff.email, "21000001", "view"),
                                   (staff.email, "21000001", "view"),
                                   (staff.email, "21000003", "view")]
    times = list(session.scalars(select(PatronAccess.at).order_by(PatronAccess.id)))
    assert times == [NOW, NOW + timedelta(minutes=5), NOW + timedelta(minutes=5)]


def test_searching_and_an_unknown_patron_write_nothing_to_the_access_log(client, session, world):
    signed_in(client, session, "staff")
    search(client, "Reyes")
    assert client.get("/staff/patrons/p_nobody").status_code == 404
    assert access_log(session) == []


def test_marketing_cannot_open_a_patron_page_and_nothing_is_logged(client, session, world):
    signed_in(client, session, "marketing")
    assert client.get(f"/staff/patrons/{world.patron.public_id}").status_code == 403
    assert search(client, "Reyes").status_code == 403
    assert access_log(session) == []


def test_an_admin_reads_the_access_log_by_staff_member_or_patron_card(client, session, world,
                                                                      app):
    desk = app.test_client()
    staff, _ = signed_in(desk, session, "staff")
    desk.get(f"/staff/patrons/{world.patron.public_id}")
    desk.get(f"/staff/patrons/{world.child.public_id}")
    signed_in(client, session, "admin")
    client.get(f"/staff/patrons/{world.child.public_id}")

    everyone = main_text(client.get("/staff/access-log").text)
    assert "3 entries" in everyone
    assert everyone.index("admin@library.example.org opened the patron page Maya Lopez") < \
        everyone.index("staff@library.example.org opened the patron page Ana Reyes")
    by_staff = main_text(client.get("/staff/access-log",
                                    query_string={"staff": staff.email}).text)
    assert "2 entries" in by_staff and "admin@library.example.org opened" not in by_staff
    by_card = main_text(client.get("/staff/access-log", query_string={"card": "21000003"}).text)
    assert "2 entries" in by_card and "Ana Reyes" not in by_card
    unknown = main_text(client.get("/staff/access-log", query_string={"card": "99"}).text)
    assert "0 entries" in unknown
