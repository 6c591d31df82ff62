"""Recording for a patron: what they told staff, through the one decision service, with the staff
member as actor; a guardian's vendor consent after an ID check."""

from __future__ import annotations

import pytest

from consent_service.domain.ledger import STAFF_SOURCES, Source
from consent_service.domain.purposes import PurposeKey
from consent_service.models import AddressDecision
from tests.conftest import NOW
from tests.integration.public_pages import main_text, sent_mail
from tests.integration.staff.desk import alert, arrange_world, ledger, signed_in

POSTAL = PurposeKey.POSTAL_MARKETING.value
PHOTO = PurposeKey.PHOTO_VIDEO.value


@pytest.fixture
def world(session, make_patron):
    return arrange_world(session, make_patron)


def post_decision(client, token, patron, **fields):
    data = {"csrf_token": token, "purpose": POSTAL, "topic": "", "decision": "opt_out",
            "source": Source.STAFF_PHONE.value, "note": "", **fields}
    return client.post(f"/staff/patrons/{patron.public_id}/decisions", data=data)


def in_force(html: str) -> str:
    return main_text(html).split("Decisions in force", 1)[1].split("What the library may do")[0]


def test_a_phone_opt_out_is_recorded_by_the_staff_member_and_shown_in_force(client, session,
                                                                            world):
    member, token = signed_in(client, session, "staff")
    response = post_decision(client, token, world.patron, note="Called in.\r\nNo more flyers.")
    assert response.status_code == 302
    page = client.get(response.location)
    assert 'role="status"' in page.text and "Recorded; it is in force now." in page.text
    assert ("Postal mail about programs — no (opt out) staff (staff@library.example.org) "
            "Staff on the phone 2026-06-01 06:00 MDT this patron's record") in in_force(page.text)
    assert "yes" not in main_text(page.text).split("Postal mail about programs —")[2][:5]

    [event] = ledger(session)
    assert (event.purpose, event.topic, event.decision, event.source, event.actor) == (
        POSTAL, "", "opt_out", "staff_phone", "staff")
    assert event.actor_ref == str(member.id) and event.occurred_at == NOW
    assert event.evidence == {"staff": "staff@library.example.org",
                              "note": "Called in.\nNo more flyers."}


@pytest.mark.parametrize("source", STAFF_SOURCES)
def test_each_way_a_patron_tells_staff_is_recorded_as_its_own_source(client, session, world,
                                                                     source):
    _, token = signed_in(client, session, "staff")
    assert post_decision(client, token, world.patron, source=source.value).status_code == 302
    assert [event.source for event in ledger(session)] == [source.value]


def test_an_email_topic_decision_is_the_addresss(client, session, world):
    _, token = signed_in(client, session, "staff")
    response = post_decision(client, token, world.patron,
                             purpose=PurposeKey.EMAIL_MARKETING.value, topic="events",
                             source=Source.STAFF_EMAIL.value)
    assert response.status_code == 302
    [event] = ledger(session)
    assert (event.topic, event.address_key) == ("events", world.patron.address_key)
    assert session.get(AddressDecision, (world.patron.address_key, event.purpose, "events"))
    assert "Library events no (opt out) staff" in in_force(client.get(response.location).text)


@pytest.mark.parametrize(("fields", "line"), [
    ({"decision": ""}, "Choose yes or no."),
    ({"source": ""}, "Say how the patron told us."),
    ({"source": Source.GPC.value}, "Not a valid choice."),
    ({"purpose": PurposeKey.MINOR_CARD.value}, "Not a valid choice."),
    ({"topic": "events"}, "Purpose 'postal_marketing' has no topics (got topic 'events')."),
    ({"topic": "nonsense"}, "Not a valid choice."),
    ({"note": "bell\x07"}, "The note contains a character that is not allowed: U+0007 (control character)."),
    ({"note": "x" * 1001}, "The note is longer than 1000 characters."),
])
def test_bad_input_gets_one_line_and_records_nothing(client, session, world, fields, line):
    _, token = signed_in(client, session, "staff")
    response = post_decision(client, token, world.patron, **fields)
    assert response.status_code == 400
    assert alert(response.text) == line
    assert ledger(session) == []


def test_a_staff_opt_in_for_a_child_under_13_is_recorded_but_not_in_force(client, session,
                                                                          world):
    _, token = signed_in(client, session, "staff")
    response = post_decision(client, token, world.child, purpose=PHOTO, decision="opt_in",
                             source=Source.STAFF_DESK.value)
    page = client.get(response.location)
    assert ("Recorded, but not in force: under 13, only a guardian's opt-in counts. "
            "Ask the guardian to agree.") in main_text(page.text)
    assert "No decisions recorded" in in_force(page.text)
    assert ("Being photographed or filmed at library activities — no a minor: needs a parent's "
            "or guardian's yes") in main_text(page.text)
    history = main_text(page.text).split("Ledger history", 1)[1]
    assert "yes (opt in) not in force (under 13: needs a guardian) staff" in history
    [event] = ledger(session)
    assert event.effective is False


def test_repeating_the_decision_in_force_records_nothing_and_says_so(client, session, world):
    _, token = signed_in(client, session, "staff")
    post_decision(client, token, world.patron)
    again = post_decision(client, token, world.patron)
    assert "Nothing recorded: that decision is already in force." in client.get(
        again.location).text
    assert len(ledger(session)) == 1


def id_check(client, token, child, **fields):
    data = {"csrf_token": token, "guardian": "21000002",
            "purpose": PurposeKey.CONTACT_UPDATE.value, "checked": "y", **fields}
    return client.post(f"/staff/patrons/{child.public_id}/id-check", data=data)


def test_an_id_check_records_the_guardians_vendor_consent_with_the_staff_member_as_evidence(
        client, session, app, world):
    _, token = signed_in(client, session, "staff")
    response = id_check(client, token, world.child)
    assert response.status_code == 302
    page = client.get(response.location)
    assert "Recorded the guardian's consent after the ID check" in main_text(page.text)
    assert ("Contact details sent to a vendor that keeps them current — yes (opt in) guardian "
            "(staff@library.example.org) Staff at the desk") in in_force(page.text)
    [event] = ledger(session)
    assert (event.purpose, event.decision, event.actor, event.source) == (
        PurposeKey.CONTACT_UPDATE.value, "opt_in", "guardian", "staff_desk")
    assert event.evidence["method"] == "id_check"
    assert event.evidence["staff"] == "staff@library.example.org"
    assert [m["To"] for m in sent_mail(app)] == ["pat.lopez@example.org"]


@pytest.mark.parametrize(("fields", "line"), [
    ({"checked": ""}, "Confirm that you checked the ID."),
    ({"guardian": "21000001"}, "21000001 is not linked to patron 21000003 as a guardian."),
    ({"purpose": PHOTO}, "Not a valid choice."),
])
def test_an_id_check_that_cannot_be_recorded_gets_one_line(client, session, world, fields,
                                                           line):
    _, token = signed_in(client, session, "staff")
    response = id_check(client, token, world.child, **fields)
    assert response.status_code == 400
    assert alert(response.text) == line
    assert ledger(session) == []


def test_the_id_check_form_is_offered_only_for_a_child_with_a_guardian(client, session, world):
    signed_in(client, session, "staff")
    assert "Vendor sharing after an ID check" in client.get(
        f"/staff/patrons/{world.child.public_id}").text
    assert "Vendor sharing after an ID check" not in client.get(
        f"/staff/patrons/{world.patron.public_id}").text


def test_staff_who_may_only_look_see_no_recording_form(client, session, world, monkeypatch):
    from consent_service.domain import staff as roles

    monkeypatch.setitem(roles.PERMISSIONS, roles.Role.STAFF,
                        roles.PERMISSIONS[roles.Role.STAFF] - {roles.Permission.RECORD_DECISIONS})
    signed_in(client, session, "staff")
    page = client.get(f"/staff/patrons/{world.child.public_id}").text
    assert "Record what the patron told us" not in page and "ID check" not in page
