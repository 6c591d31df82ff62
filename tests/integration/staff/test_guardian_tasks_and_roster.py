"""Guardians' requests on a staff page (the commands stay), and the photo roster: who must not
be photographed at an event, unknown cards apart, each patron found written to the access log."""

from __future__ import annotations

import io

import pytest

from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.domain.purposes import PurposeKey
from consent_service.services.decisions import DecisionRequest, record_decision
from tests.conftest import NOW
from tests.integration.public_pages import main_text
from tests.integration.staff.desk import CHILD_BORN, access_log, alert, arrange_world, signed_in

PHOTO = PurposeKey.PHOTO_VIDEO.value


@pytest.fixture
def world(session, make_patron):
    return arrange_world(session, make_patron)


def test_open_requests_are_listed_and_marking_one_done_closes_it(client, session, runner, world):
    _, token = signed_in(client, session, "staff")
    listed = main_text(client.get("/staff/guardian-tasks").text)
    assert ("1 open request Request Asked for Child Guardian Asked on Done? "
            f"{world.task_id} a copy of the child's data Maya, card 21000003 card 21000002 "
            "2026-06-01 06:00 MDT Mark done") in listed

    done = client.post(f"/staff/guardian-tasks/{world.task_id}/done", data={"csrf_token": token})
    assert done.status_code == 302
    after = main_text(client.get(done.location).text)
    assert f"Request {world.task_id} (a copy of the child's data) marked done." in after
    assert "No open requests." in after
    assert runner.invoke(args=["guardians", "tasks"]).output.strip() == "no open requests"


def test_a_request_closed_already_gets_one_line(client, session, world):
    _, token = signed_in(client, session, "staff")
    client.post(f"/staff/guardian-tasks/{world.task_id}/done", data={"csrf_token": token})
    again = client.post(f"/staff/guardian-tasks/{world.task_id}/done",
                        data={"csrf_token": token})
    assert again.status_code == 400
    assert alert(again.text) == f"No open family request {world.task_id}."


@pytest.fixture
def event_sheet(session, ctx, world, make_patron):
    """A sign-in sheet: Ana (declined photos), Maya (8, no guardian's consent), Lia (8, her
    guardian agreed), Pat (an adult who said nothing: photos are opt-out)."""
    def decide(patron, decision, actor):
        record_decision(session, ctx, DecisionRequest(
            purpose=PHOTO, decision=Decision(decision), source=Source.GUARDIAN_PAGE
            if actor is Actor.GUARDIAN else Source.PREFERENCE_CENTER, actor=actor,
            occurred_at=NOW, patron=patron), now=NOW)
        session.commit()

    decide(world.patron, "opt_out", Actor.PATRON)
    lia = make_patron(card="21000004", first_name="Lia", last_name="Ortiz", email=None,
                      birth_date=CHILD_BORN)
    decide(lia, "opt_in", Actor.GUARDIAN)
    return world


def roster(client, token, **data):
    return client.post("/staff/photo-roster", data={"csrf_token": token, **data},
                       content_type="multipart/form-data")


def test_the_roster_lists_who_must_not_be_photographed_and_the_unknown_cards(
        client, session, event_sheet):
    staff, token = signed_in(client, session, "staff")
    response = roster(client, token, cards="21000003\n21000001, 21000004\n\n21000002 X99\n21000001")
    assert response.status_code == 200
    text = main_text(response.text)
    assert ("Do not photograph or film (2) Maya L. – card 21000003 – under 13, no guardian's "
            "consent Ana R. – card 21000001 – declined photos") in text
    assert "5 card numbers checked: 2 may be photographed, 2 may not, 1 unknown." in text
    assert "Unknown card numbers (1)" in text and text.endswith("X99 Print this page with "
                                                                "your browser's Print command: "
                                                                "it fits on one page. Check "
                                                                "another sheet")
    assert "Reyes" not in text and "Lopez" not in text  # first name and initial only
    assert sorted(access_log(session)) == [(staff.email, card, "photo_roster") for card in
                                           ("21000001", "21000002", "21000003", "21000004")]


def test_an_uploaded_sheet_with_a_card_number_column_is_read(client, session, event_sheet):
    _, token = signed_in(client, session, "staff")
    sheet = "\ufeffName,Card_Number,Signed in\nAna,21000001,10:02\nSomeone,,10:03\nMaya,21000003,10:05\n"
    response = roster(client, token, cards="",
                      file=(io.BytesIO(sheet.encode("utf-8")), "sign-in.csv"))
    text = main_text(response.text)
    assert "2 card numbers checked: 0 may be photographed, 2 may not, 0 unknown." in text


def test_a_sheet_excel_saved_with_semicolons_in_windows_1252_is_read(client, session,
                                                                     event_sheet):
    _, token = signed_in(client, session, "staff")
    sheet = "Nombre;Card_Number;Firmó\r\nAna;21000001;10:02\r\nMaya;21000003;10:05\r\n"
    response = roster(client, token, cards="",
                      file=(io.BytesIO(sheet.encode("windows-1252")), "sign-in.csv"))
    text = main_text(response.text)
    assert "2 card numbers checked: 0 may be photographed, 2 may not, 0 unknown." in text


@pytest.mark.parametrize(("data", "line"), [
    ({"cards": " \n , "}, "Enter or upload at least one card number."),
    ({"cards": "", "file": (io.BytesIO("21000001\n".encode("utf-16")), "sheet.txt")},
     "The file is not CSV text (UTF-16, or a spreadsheet's own format?); save it as "
     "\"CSV UTF-8\"."),
    ({"cards": "", "file": (io.BytesIO(b"21000001\x81\n"), "sheet.csv")},
     "The file is neither UTF-8 nor Windows-1252 text; save it as \"CSV UTF-8\"."),
    ({"cards": "21000001\x00"},
     "The list of card numbers contains a character that is not allowed: U+0000 (control character)."),
])
def test_a_roster_that_cannot_be_read_gets_one_line(client, session, event_sheet, data, line):
    _, token = signed_in(client, session, "staff")
    response = roster(client, token, **data)
    assert response.status_code == 400
    assert alert(response.text) == line
    assert access_log(session) == []


def test_the_roster_page_is_printable(client, session, event_sheet):
    _, token = signed_in(client, session, "staff")
    page = roster(client, token, cards="21000001").text
    assert '<link rel="stylesheet" href="/static/css/staff.css">' in page
    css = client.get("/static/css/staff.css").text
    assert "@media print" in css and ".site-header, .site-footer" in css
