"""Staff erase a patron: from the patron page (the card number typed again) or an erasure request;
the requests page shows each one's state and who carried it out."""

from __future__ import annotations

from sqlalchemy import select

from consent_service.models import ErasureRequest, Patron
from tests.integration.public_pages import main_text
from tests.integration.staff.desk import arrange_world, signed_in


def test_a_mistyped_card_erases_nothing_and_says_why(client, session, make_patron):
    world = arrange_world(session, make_patron)
    _, token = signed_in(client, session, "staff")
    response = client.post(world.fill("/staff/patrons/{patron}/erase"),
                           data={"csrf_token": token, "card": "21000009"})
    assert response.status_code == 400
    assert ("Nothing was erased: type the patron's card number exactly to confirm."
            in main_text(response.text))
    session.expire_all()
    assert session.get(Patron, world.patron.id).first_name == "Ana"


def test_staff_erase_from_the_patron_page_and_the_request_shows_done_by_them(client, session,
                                                                           make_patron):
    world = arrange_world(session, make_patron)
    member, token = signed_in(client, session, "staff", "desk.clerk@library.example.org")
    page = client.get(world.fill("/staff/patrons/{patron}"))
    assert "Erase this patron's personal data" in main_text(page.text)

    response = client.post(world.fill("/staff/patrons/{patron}/erase"),
                           data={"csrf_token": token, "card": "21000001"})

    assert response.status_code == 302 and response.location == "/staff/erasure-requests"
    session.expire_all()
    patron = session.get(Patron, world.patron.id)
    assert (patron.first_name, patron.email, patron.status) == ("", None, "inactive")
    [task] = session.scalars(select(ErasureRequest)).all()  # the patron's own open request, done
    assert (task.requested_by, task.status, task.done_by) == ("patron", "done", member.email)
    listing = main_text(client.get("/staff/erasure-requests").text)
    assert "0 open, 1 done" in listing
    assert "the patron (preference center)" in listing and f"by {member.email}" in listing


def test_carrying_out_a_request_twice_is_refused_in_one_line(client, session, make_patron):
    world = arrange_world(session, make_patron)
    _, token = signed_in(client, session, "admin")
    path = world.fill("/staff/erasure-requests/{erasure}/erase")
    assert client.post(path, data={"csrf_token": token}).status_code == 302
    again = client.post(path, data={"csrf_token": token})
    assert again.status_code == 400
    assert f"No open erasure request {world.erasure_id}." in main_text(again.text)
