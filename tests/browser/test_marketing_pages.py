"""The marketing pages in a real Chromium: sign in, pick a topic, read the counts, download the list,
see who was left out and why, and a vendor export's withdrawals; each page checked with axe-core."""

from __future__ import annotations

import csv
from datetime import date, timedelta

import pytest
from playwright.sync_api import Page, expect

from consent_service import runtime
from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.domain.purposes import VENDOR_PURPOSES, PurposeKey
from consent_service.extensions import db
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.staff_accounts import create_staff
from tests.conftest import NOW

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery staple"
EMAIL = PurposeKey.EMAIL_MARKETING.value
CONTACT_UPDATE = VENDOR_PURPOSES[0]


def decide(site, patron, decision, *, purpose, at, topic=None, source=Source.STAFF_PHONE):
    with site.app.app_context():
        record_decision(db.session, runtime.context(site.app), DecisionRequest(
            purpose=purpose, topic=topic, decision=Decision(decision), source=source,
            actor=Actor.PATRON, occurred_at=at, patron=db.session.merge(patron)), now=NOW)
        db.session.commit()


def sign_in_as_marketing(site, page: Page) -> None:
    with site.app.app_context():
        create_staff(db.session, "marketing@library.example.org", "marketing", PASSWORD, now=NOW)
    page.goto(f"{site.url}/staff/marketing/exports")
    page.get_by_label("Email").fill("marketing@library.example.org")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Exports and counts")


def left_out_table(page: Page) -> dict[str, str]:
    table = page.get_by_role("table", name="Left out, by reason")
    return {row.get_by_role("rowheader").inner_text(): row.get_by_role("cell").inner_text()
            for row in table.get_by_role("row").all()[1:]}


def test_marketing_picks_a_topic_sees_who_is_left_out_and_downloads_the_list(
        site, page, check_page, csp_reports, tmp_path):
    ana = site.patron(first_name="Ana", email="ana@example.org")
    ben = site.patron(first_name="Ben", email="ben@example.org")
    site.patron(first_name="Kim", email="kim@example.org", birth_date=date(2019, 4, 2))
    decide(site, ben, "opt_out", purpose=EMAIL, topic="events", at=NOW - timedelta(days=1),
           source=Source.UNSUBSCRIBE_LINK)
    sign_in_as_marketing(site, page)
    check_page(page, "marketing-exports")

    page.get_by_label("Purpose").select_option(label="Email about programs, services and events")
    page.get_by_label("Email topic").select_option(label="Library events")
    page.get_by_role("button", name="Show the counts").click()

    expect(page.locator("main")).to_contain_text(
        "topic Library events: 1 row in the file, 1 eligible patron, 2 left out.")
    assert left_out_table(page) == {"Said no (opted out)": "1",
                                    "Child without a guardian's consent": "1"}
    expect(page.get_by_role("img", name="Eligible and left out, by reason")).to_be_visible()
    movement = page.get_by_role("table", name="Decisions per week, by source")
    expect(movement).to_contain_text("1 (Unsubscribe link: 1)")
    check_page(page, "marketing-counts")

    with page.expect_download() as started:
        page.get_by_role("button", name="Download the CSV").click()
    download = started.value
    assert download.suggested_filename == "contacts-email_marketing-events-2026-06-01.csv"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    with saved.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["email"], row["patron_id"]) for row in rows] == [("ana@example.org", ana.public_id)]

    page.goto(f"{site.url}/staff/marketing/exports")
    past = page.get_by_role("table", name="The latest 1 export, newest first, as their manifests "
                                          "record them")
    expect(past).to_contain_text("email_marketing")
    expect(past).to_contain_text("marketing@library.example.org")
    expect(past).to_contain_text("not sent to a vendor")
    assert csp_reports == []


def test_a_vendor_exports_withdrawals_page(site, page, check_page, csp_reports):
    ana = site.patron(first_name="Ana", email="ana@example.org")
    site.patron(first_name="Ben", email="ben@example.org")
    sign_in_as_marketing(site, page)
    page.get_by_label("Purpose").select_option(value=CONTACT_UPDATE)
    page.get_by_role("button", name="Show the counts").click()
    with page.expect_download():
        page.get_by_role("button", name="Download the CSV").click()
    decide(site, ana, "opt_out", purpose=CONTACT_UPDATE, at=NOW + timedelta(minutes=1))

    page.goto(f"{site.url}/staff/marketing/exports")
    page.get_by_role("link", name="Withdrawals since export 1").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Withdrawn since export 1")
    listed = page.get_by_role("table")
    expect(listed).to_contain_text(ana.public_id)
    expect(listed).to_contain_text("Staff on the phone")
    expect(listed).to_contain_text("still withdrawn")
    check_page(page, "marketing-withdrawals")
    assert csp_reports == []
