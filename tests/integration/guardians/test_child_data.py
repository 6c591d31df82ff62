"""A child's data from the guardian's family page: downloaded at once (no staff task), the child's
record and events without the guardian's own evidence, receipts for the child's events only, and
nothing for a child who is not this guardian's."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select

from consent_service.domain.receipts import receipt_id
from consent_service.models import ConsentEvent, FamilyRequest
from tests.integration.guardians.helpers import CHILD_BORN, answer, last_token, link
from tests.integration.public_pages import main_text


@pytest.fixture
def family(app, client, runner, session, make_patron, maya, pat, topics):
    link(runner, maya, card=pat.card_number)
    answer(client, last_token(app, "pat@example.org", "guardian"), ["child_programs"],
           name="Patricia Parent")
    noor = make_patron(card="K0003", first_name="Noor", email=None, birth_date=CHILD_BORN)
    link(runner, noor, email="noor.mom@example.org")
    return {"token": last_token(app, "pat@example.org", "family"), "maya": maya, "pat": pat,
            "noor": noor}


def child_url(family, child, suffix=""):
    return f"/family/{family['token']}/children/{child.public_id}/data{suffix}"


def test_the_family_page_links_to_each_childs_data_instead_of_asking_staff(client, family):
    html = client.get(f"/family/{family['token']}").text
    assert f'href="{child_url(family, family["maya"])}">See and download Maya\'s data</a>' in html
    assert 'value="download"' not in html


def test_a_guardian_downloads_the_childs_data_without_their_own_evidence(client, session,
                                                                        family):
    response = client.get(child_url(family, family["maya"], ".json"))

    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == \
        f'attachment; filename="library-data-{family["maya"].public_id}.json"'
    assert response.headers["Cache-Control"] == "no-store"
    data = response.get_json(force=True)
    assert data["patron"]["first_name"] == "Maya" and data["patron"]["card_number"] == "K0001"
    (event,) = data["events"]
    assert (event["purpose"], event["decision"], event["actor"]) == \
        ("child_programs", "opt_in", "guardian")
    assert event["evidence"] == {"confirmed_guardian": "yes", "method": "email_plus",
                                 "notice_version": event["evidence"]["notice_version"]}
    assert data["guardians"][0]["guardian"] == "Pat"
    stored = session.scalar(select(ConsentEvent))
    for value in ("Patricia Parent", stored.evidence["ip"], stored.evidence["user_agent"],
                  stored.evidence["guardian_link"], "G0001", "pat@example.org", "Noor"):
        assert value not in response.text, value
    assert session.scalars(select(FamilyRequest)).all() == []  # no task for staff


def test_the_childs_page_and_receipts_open_from_the_family_link(client, ctx, session, family):
    page = client.get(child_url(family, family["maya"]))
    assert page.status_code == 200
    assert main_text(page.text).startswith("Maya's data")
    event = session.scalar(select(ConsentEvent))
    rid = receipt_id(ctx.address_secret, event.id)
    receipt = client.get(f"/family/{family['token']}/children/{family['maya'].public_id}"
                         f"/receipts/{rid}.json")
    assert receipt.status_code == 200
    assert receipt.get_json(force=True)["piiPrincipalId"] == family["maya"].public_id
    assert receipt.get_json(force=True)["sensitive"] is True


@pytest.mark.parametrize("suffix", ["", ".json"])
def test_another_familys_child_or_the_guardian_themself_is_a_404(client, family, suffix):
    assert client.get(child_url(family, family["noor"], suffix)).status_code == 404
    assert client.get(child_url(family, family["pat"], suffix)).status_code == 404


def test_a_receipt_for_an_event_not_on_the_childs_record_is_a_404(client, ctx, session, family,
                                                                  make_patron):
    from consent_service.domain.ledger import Actor, Decision, Source
    from consent_service.services.decisions import DecisionRequest, record_decision
    from tests.conftest import NOW

    other = make_patron(first_name="Olive", birth_date=date(1990, 1, 1))
    recorded = record_decision(session, ctx, DecisionRequest(
        purpose="photo_video", decision=Decision.OPT_OUT, source=Source.STAFF_DESK,
        actor=Actor.STAFF, occurred_at=NOW, patron=other), now=NOW)
    session.commit()
    rid = receipt_id(ctx.address_secret, recorded.event.id)
    assert client.get(f"/family/{family['token']}/children/{family['maya'].public_id}"
                      f"/receipts/{rid}.json").status_code == 404
