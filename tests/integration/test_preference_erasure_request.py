"""A patron asks, from the preference center, for their data to be erased: a page that says what
erasure removes and keeps (a GET changes nothing), a confirmation tick, and a request for staff."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from consent_service.domain.tokens import LinkKind
from consent_service.models import ErasureRequest
from tests.conftest import NOW
from tests.integration.public_pages import csrf_token, main_text


@pytest.fixture
def app(app_factory):
    return app_factory(CLOCK=lambda: NOW)


def erase_path(ctx, patron):
    return f"/preferences/{ctx.signer.sign(LinkKind.PREFERENCES, patron.public_id, None, None)}/erase"


def test_the_preference_center_links_to_the_erasure_page_which_changes_nothing(client, ctx, session,
                                                                             make_patron):
    patron = make_patron()
    path = erase_path(ctx, patron)
    preferences = client.get(path.removesuffix("/erase"))
    assert f'href="{path}"' in preferences.text
    page = client.get(path)
    assert page.status_code == 200
    assert "this service removes your name, email and postal addresses" in main_text(page.text)
    assert session.scalars(select(ErasureRequest)).all() == []


def test_without_the_tick_nothing_is_asked(client, ctx, session, make_patron):
    path = erase_path(ctx, make_patron())
    response = client.post(path, data={"csrf_token": csrf_token(client.get(path).text)})
    assert response.status_code == 400
    assert "Tick this box to confirm you want your data erased." in main_text(response.text)
    assert session.scalars(select(ErasureRequest)).all() == []


def test_a_confirmed_request_is_one_open_task_for_staff(client, ctx, session, make_patron):
    patron = make_patron()
    path = erase_path(ctx, patron)
    token = csrf_token(client.get(path).text)
    first = client.post(path, data={"csrf_token": token, "confirm": "y"})
    again = client.post(path, data={"csrf_token": token, "confirm": "y"})
    assert "We have asked library staff to erase your data." in main_text(first.text)
    assert "You asked for this already" in main_text(again.text)
    [task] = session.scalars(select(ErasureRequest)).all()
    assert (task.patron_id, task.requested_by, task.status, task.created_at) == (
        patron.id, "patron", "open", NOW)


def test_a_spanish_speaking_patron_gets_the_page_in_spanish(client, ctx, make_patron):
    page = client.get(erase_path(ctx, make_patron(preferred_language="es")))
    assert '<html lang="es">' in page.text
    assert "<h1>Borrar mis datos</h1>" in page.text
