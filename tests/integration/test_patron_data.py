"""A patron's data: the readable page and the JSON download hold everything about the person and
nothing about anyone else (a household member at the same address with their own events, notes,
network and exports); consent receipts after Kantara v1.1 for the person's own events only; signed
links only, no caching, rate-limited."""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.domain.receipts import receipt_id
from consent_service.domain.tokens import LinkKind
from consent_service.models import ConsentEvent, PolicyVersion, UnsubscribeFeedback
from consent_service.services.decisions import DecisionRequest, record_decision
from tests.conftest import NOW
from tests.integration.public_pages import link_token, main_text, tampered

SAMPLES = os.environ.get("CONSENT_SAMPLES_DIR")  # set to keep a download and a receipt as files


@pytest.fixture
def app(app_factory, clock):
    return app_factory(CLOCK=clock)


def decide(session, ctx, patron, purpose, decision, source, actor=Actor.PATRON, *, days_ago=1,
           evidence=None, topic=None):
    recorded = record_decision(session, ctx, DecisionRequest(
        purpose=purpose, topic=topic, decision=decision, source=source, actor=actor,
        occurred_at=NOW - timedelta(days=days_ago), patron=patron, evidence=evidence or {}),
        now=NOW)
    session.commit()
    return recorded.event


@pytest.fixture
def household(session, ctx, make_patron, runner):
    """Ana and Ben share an email address; each has their own events, evidence and notes."""
    session.add(PolicyVersion(version="2026-01", effective_at=NOW - timedelta(days=60),
                              summary="The policy.", material=True, created_at=NOW))
    session.commit()
    ana = make_patron(card="A0001", first_name="Ana", last_name="Reyes", email="home@example.org",
                      birth_date=date(1985, 2, 3), street="12 Aspen Way", city="Castle Rock",
                      state="CO", postal_code="80104")
    ben = make_patron(card="B0002", first_name="Benedict", last_name="Zedd",
                      email="home@example.org", birth_date=date(1979, 11, 12),
                      street="99 Juniper Court", city="Parker", state="CO", postal_code="80134")
    ana_modeling = decide(session, ctx, ana, "third_party_modeling", Decision.OPT_OUT,
                          Source.PREFERENCE_CENTER, days_ago=5,
                          evidence={"ip": "203.0.113.0/24", "user_agent": "AnaBrowser/1.0",
                                    "token_id": "ana0token0000001"})
    ana_photo = decide(session, ctx, ana, "photo_video", Decision.OPT_OUT, Source.STAFF_PHONE,
                       Actor.STAFF, days_ago=4,
                       evidence={"staff": "clerk.one@library.example.org",
                                 "note": "Ana called: no photos at story time"})
    ben_email = decide(session, ctx, ben, "email_marketing", Decision.OPT_OUT,
                       Source.UNSUBSCRIBE_LINK, days_ago=3,
                       evidence={"ip": "198.51.100.0/24", "user_agent": "BenBrowser/9.9",
                                 "token_id": "ben0token0000009"})
    session.add(UnsubscribeFeedback(event_id=ben_email.id, reason_code="other",
                                    text="Benedict's own reason, private", created_at=NOW))
    ben_postal = decide(session, ctx, ben, "postal_marketing", Decision.OPT_IN,
                        Source.STAFF_DESK, Actor.STAFF, days_ago=2,
                        evidence={"staff": "clerk.two@library.example.org",
                                  "note": "Benedict's desk note: prefers paper"})
    session.commit()
    exported = runner.invoke(args=["export", "contacts", "--purpose", "postal_marketing",
                                   "--output", "/dev/null"])
    assert exported.exit_code == 0, exported.output
    return {"ana": ana, "ben": ben, "ana_events": [ana_modeling, ana_photo],
            "ben_events": [ben_email, ben_postal]}


def others_values(household, ctx):
    """Every value of Ben's that must never reach Ana."""
    ben = household["ben"]
    values = ["Benedict", "Zedd", "B0002", ben.public_id, "1979-11-12", "99 Juniper Court",
              "Parker", "80134", "198.51.100", "BenBrowser", "ben0token0000009",
              "Benedict's own reason", "Benedict's desk note", "clerk.two@library.example.org",
              "clerk.one@library.example.org"]  # a staff member's address is theirs, not Ana's
    values += [receipt_id(ctx.address_secret, e.id) for e in household["ben_events"]]
    return values


def data_url(ctx, patron, suffix=""):
    return f"/preferences/{link_token(ctx, LinkKind.PREFERENCES, patron)}/data{suffix}"


def test_the_download_holds_everything_about_the_patron(client, ctx, household):
    ana = household["ana"]

    response = client.get(data_url(ctx, ana, ".json"))

    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == \
        f'attachment; filename="library-data-{ana.public_id}.json"'
    assert response.headers["Cache-Control"] == "no-store"
    data = response.get_json(force=True)
    assert data["patron"] == {
        "patron_id": ana.public_id, "card_number": "A0001", "ils_id": None, "first_name": "Ana",
        "last_name": "Reyes", "email": "home@example.org", "birth_date": "1985-02-03",
        "preferred_language": "en", "street": "12 Aspen Way", "city": "Castle Rock",
        "state": "CO", "postal_code": "80104", "status": "active",
        "created_at": NOW.isoformat(), "updated_at": NOW.isoformat()}
    modeling, photo = data["events"]
    assert modeling["evidence"] == {"ip": "203.0.113.0/24", "token_id": "ana0token0000001",
                                    "user_agent": "AnaBrowser/1.0"}
    assert modeling["policy_version"] == "2026-01" and modeling["source"] == "preference_center"
    assert photo["evidence"] == {"note": "Ana called: no photos at story time"}  # not the clerk
    assert photo["receipt_id"] == receipt_id(ctx.address_secret, household["ana_events"][1].id)
    in_force = {(d["scope"], d["purpose"]): d for d in data["decisions_in_force"]}
    assert in_force[("patron", "third_party_modeling")]["yours"] is True
    # Ben's unsubscribe is in force for Ana's address: shown, but not as hers and without a receipt
    assert in_force[("address", "email_marketing")] == {
        "scope": "address", "purpose": "email_marketing", "topic": None, "decision": "opt_out",
        "since": (NOW - timedelta(days=3)).isoformat(), "actor": "patron",
        "source": "unsubscribe_link", "yours": False, "receipt_id": None}
    assert data["exports"] == [{"date": NOW.isoformat(), "purpose": "postal_marketing",
                                "topic": None}]
    if SAMPLES:
        Path(SAMPLES).mkdir(parents=True, exist_ok=True)
        (Path(SAMPLES) / "download.json").write_text(response.text)


def test_nothing_about_a_household_member_appears_in_the_download_or_the_page(client, ctx,
                                                                             household):
    ana = household["ana"]
    download = client.get(data_url(ctx, ana, ".json")).text
    page = client.get(data_url(ctx, ana)).text

    for value in others_values(household, ctx):
        assert value not in download, value
        assert value not in page, value
    assert "Ana called: no photos at story time" in download and "AnaBrowser/1.0" in page


def test_the_readable_page_shows_the_record_the_decisions_and_a_receipt_link_for_each(
        client, ctx, household):
    ana = household["ana"]
    # one token for the request and the links it must hold: a token signed a second later differs
    token = link_token(ctx, LinkKind.PREFERENCES, ana)
    response = client.get(f"/preferences/{token}/data")

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    text = main_text(response.text)
    assert "Name Ana Reyes Library card A0001 Email address home@example.org" in text
    assert "Sharing to reach more people No" in text
    assert ("Email from the library a decision on the email address No May 29, 2026, 6:00:00 AM "
            "Someone using the same email address, or the mail provider —") in text
    assert "Told to library staff" not in text  # the page's own words, not the receipt's
    assert ("May 28, 2026, 6:00:00 AM Photos and video at library events No By phone to "
            "library staff Library staff 2026-01 note: Ana called: no photos at story time") in text
    for event in household["ana_events"]:
        assert f"/preferences/{token}/receipts/{receipt_id(ctx.address_secret, event.id)}.json" \
            in response.text
    assert f'href="/preferences/{token}/data.json"' in response.text


def test_the_preference_center_links_to_the_data_page(client, ctx, household):
    token = link_token(ctx, LinkKind.PREFERENCES, household["ana"])
    html = client.get(f"/preferences/{token}").text
    assert f'href="/preferences/{token}/data">See and download your data</a>' in html


def test_the_data_page_is_in_the_patrons_language(client, ctx, make_patron):
    sol = make_patron(first_name="Sol", preferred_language="es")
    text = main_text(client.get(data_url(ctx, sol)).text)
    assert text.startswith("Sus datos Todo lo que el servicio de consentimiento")


def receipt_url(ctx, patron, rid):
    return f"/preferences/{link_token(ctx, LinkKind.PREFERENCES, patron)}/receipts/{rid}.json"


def test_a_receipt_carries_the_kantara_fields_for_one_of_the_patrons_decisions(client, ctx,
                                                                               household):
    ana = household["ana"]
    event = household["ana_events"][0]
    rid = receipt_id(ctx.address_secret, event.id)

    response = client.get(receipt_url(ctx, ana, rid))

    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == \
        f'attachment; filename="consent-receipt-{rid}.json"'
    assert response.headers["Cache-Control"] == "no-store"
    receipt = response.get_json(force=True)
    assert receipt == {
        "version": "KI-CR-v1.1.0",
        "jurisdiction": "US-CO",
        "consentTimestamp": int((NOW - timedelta(days=5)).timestamp()),
        "collectionMethod": "The library's online preference center, opened by a signed link",
        "consentReceiptID": rid,
        "language": "en",
        "piiPrincipalId": ana.public_id,
        "piiControllers": [{
            "piiController": "Example County Library",
            "contact": "Example County Library privacy contact",
            "address": {"streetAddress":
                        "Example County Library, 100 Main St, Castle Rock, CO 80104"},
            "email": "privacy@library.example.org",
            "phone": "",
        }],
        "policyUrl": "https://library.example.org/privacy",
        "services": [{
            "service": "Example County Library: communications and privacy choices",
            "purposes": [{
                "purpose": "Data sent to a vendor that builds models to reach patrons",
                "purposeCategory": ["9 - Sharing for Marketing"],
                "consentType": "EXPLICIT",
                "piiCategory": ["1 - Biographical", "2 - Contact", "15 - Behavioral"],
                "primaryPurpose": True,
                "termination": "Withdrawn: stays so until the person allows it again",
                "thirdPartyDisclosure": True,
                "thirdPartyName": "Example Outreach Analytics",
            }],
        }],
        "sensitive": False,
        "spiCat": [],
        "policyVersion": "2026-01",
        "decision": "opt_out",
        "purposeKey": "third_party_modeling",
        "topic": None,
        "source": "preference_center",
        "actor": "patron",
        "occurredAt": (NOW - timedelta(days=5)).isoformat(),
        "effective": True,
        "inForce": True,
    }
    assert client.get(receipt_url(ctx, ana, rid)).get_json(force=True) == receipt  # stable id
    if SAMPLES:
        Path(SAMPLES).mkdir(parents=True, exist_ok=True)
        (Path(SAMPLES) / "receipt.json").write_text(response.text)


def test_a_receipt_for_someone_elses_event_or_an_unknown_id_is_a_404(client, ctx, household):
    ana, ben = household["ana"], household["ben"]
    for event in household["ben_events"]:
        rid = receipt_id(ctx.address_secret, event.id)
        assert client.get(receipt_url(ctx, ana, rid)).status_code == 404
        assert client.get(receipt_url(ctx, ben, rid)).status_code == 200
    assert client.get(receipt_url(ctx, ana, "00000000-0000-4000-8000-000000000000")) \
        .status_code == 404
    assert client.get(receipt_url(ctx, ana, str(household["ana_events"][0].id))).status_code == 404


def test_a_receipt_says_when_a_decision_is_no_longer_in_force_and_marks_a_childs_data(
        client, session, ctx, make_patron):
    kid = make_patron(first_name="Kid", birth_date=date(2018, 1, 1))
    first = decide(session, ctx, kid, "photo_video", Decision.OPT_OUT, Source.STAFF_DESK,
                   Actor.STAFF, days_ago=3)
    decide(session, ctx, kid, "photo_video", Decision.OPT_IN, Source.GUARDIAN_PAGE,
           Actor.GUARDIAN, days_ago=1)
    receipt = client.get(receipt_url(ctx, kid, receipt_id(ctx.address_secret, first.id))) \
        .get_json(force=True)
    assert receipt["inForce"] is False
    assert receipt["sensitive"] is True
    assert receipt["spiCat"] == ["Personal information of a child under 13 (COPPA)"]


@pytest.mark.parametrize("suffix", ["", ".json"])
def test_a_bad_or_wrong_kind_link_gets_the_400_page(client, ctx, household, suffix):
    ana = household["ana"]
    good = link_token(ctx, LinkKind.PREFERENCES, ana)
    unsubscribe = link_token(ctx, LinkKind.UNSUBSCRIBE, ana)
    assert client.get(f"/preferences/{tampered(good)}/data{suffix}").status_code == 400
    assert client.get(f"/preferences/{unsubscribe}/data{suffix}").status_code == 400


def test_downloads_are_rate_limited_per_client(app_factory, clock, make_patron):
    app = app_factory(CLOCK=clock, DATA_DOWNLOAD_LIMIT_PER_CLIENT="2 per hour")
    from consent_service import runtime

    with app.app_context():
        from consent_service.extensions import db
        from consent_service.models import Patron

        patron = Patron(card_number="R1", first_name="Rae", email="rae@example.org",
                        created_at=NOW, updated_at=NOW)
        db.session.add(patron)
        db.session.commit()
        url = data_url(runtime.context(app), patron, ".json")
    client = app.test_client()
    assert [client.get(url).status_code for _ in range(3)] == [200, 200, 429]


def test_downloading_changes_nothing(client, session, ctx, household):
    before = session.scalar(select(ConsentEvent.id).order_by(ConsentEvent.id.desc()).limit(1))
    client.get(data_url(ctx, household["ana"]))
    client.get(data_url(ctx, household["ana"], ".json"))
    session.expire_all()
    assert session.scalar(select(ConsentEvent.id).order_by(ConsentEvent.id.desc()).limit(1)) \
        == before
