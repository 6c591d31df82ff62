"""Staff in a real Chromium: sign in, find a patron, record a phone opt-out and see it in force;
the photo roster printed on one page; the admin pages. Every staff page added for looking
patrons up, the roster and admin is checked with axe-core and photographed."""

from __future__ import annotations

import re
from datetime import date

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from consent_service import runtime
from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.domain.purposes import PurposeKey
from consent_service.extensions import db
from consent_service.models import ConsentEvent, Patron
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.staff_accounts import create_staff
from tests.browser.conftest import SCREENSHOTS
from tests.conftest import NOW
from tests.integration.staff.helpers import PASSWORD

pytestmark = pytest.mark.browser


def staff_account(site, email: str, role: str) -> None:
    with site.app.app_context():
        create_staff(db.session, email, role, PASSWORD, now=NOW)


def sign_in(page: Page, site, email: str) -> None:
    page.goto(f"{site.url}/staff/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Staff sign-in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Staff")


def recorded(site) -> list[tuple[str, str, str, str, str]]:
    with site.app.app_context():
        return [(e.purpose, e.decision, e.source, e.actor, e.evidence.get("staff", ""))
                for e in db.session.scalars(select(ConsentEvent).order_by(ConsentEvent.id))]


def test_staff_find_a_patron_and_record_a_phone_opt_out(site, page: Page, check_page,
                                                        csp_reports):
    site.patron(first_name="Ana", email="ana.reyes@example.org", street="12 Aspen Way",
                city="Castle Rock", postal_code="80104")
    staff_account(site, "desk@library.example.org", "staff")
    sign_in(page, site, "desk@library.example.org")

    page.get_by_role("link", name="Find a patron").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Find a patron")
    check_page(page, "staff-search")
    page.get_by_label("Card number, email address or name").fill("ana exa")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("main")).to_contain_text("1 patron found")
    check_page(page, "staff-search-results")

    page.get_by_role("link", name="Example, Ana").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Ana Example")
    in_force = page.get_by_role("table", name="Decisions in force")
    expect(page.locator("#in-force + p")).to_have_text(
        "No decisions recorded: every purpose follows its default.")
    check_page(page, "staff-patron")

    page.get_by_label("Purpose").select_option(label="Postal mail about programs")
    page.get_by_role("group", name="Decision").get_by_label("no (opt out)").check()
    page.get_by_role("group", name="How the patron told us").get_by_label("On the phone").check()
    page.get_by_label("Note (optional)").fill("Called: no more flyers, please.")
    page.get_by_role("button", name="Record the decision").click()

    expect(page.get_by_role("status")).to_have_text("Recorded; it is in force now.")
    row = in_force.get_by_role("row").filter(has_text="Postal mail about programs")
    expect(row).to_contain_text("no (opt out)")
    expect(row).to_contain_text("staff (desk@library.example.org)")
    expect(row).to_contain_text("Staff on the phone")
    eligibility = page.get_by_role("table", name="What the library may do today")
    expect(eligibility.get_by_role("row").filter(has_text="Postal mail about programs")) \
        .to_contain_text("said no (opted out)")
    check_page(page, "staff-patron-recorded")
    assert recorded(site) == [(PurposeKey.POSTAL_MARKETING.value, "opt_out", "staff_phone",
                               "staff", "desk@library.example.org")]
    assert csp_reports == []


def test_the_photo_roster_lists_who_must_not_be_photographed_on_one_printed_page(
        site, page: Page, check_page):
    declined = [site.patron(first_name=f"Ana{n:02d}", email=None) for n in range(45)]
    children = [site.patron(first_name=f"Maya{n:02d}", email=None, birth_date=date(2018, 3, 3))
                for n in range(15)]
    with site.app.app_context():
        for patron in declined:
            record_decision(db.session, runtime.context(site.app), DecisionRequest(
                purpose=PurposeKey.PHOTO_VIDEO.value, decision=Decision.OPT_OUT,
                source=Source.GPC, actor=Actor.PATRON, occurred_at=NOW,
                patron=db.session.get(Patron, patron.id)), now=NOW)
        db.session.commit()
    allowed = site.patron(first_name="Pat", email=None)
    cards = [p.card_number for p in [allowed, *declined, *children]] + ["X0001", "X0002"]
    staff_account(site, "desk@library.example.org", "staff")
    sign_in(page, site, "desk@library.example.org")

    page.get_by_role("link", name="Photo roster for an event").click()
    check_page(page, "staff-photo-roster")
    page.get_by_label("Card numbers (one a line, or separated by commas)").fill("\n".join(cards))
    page.get_by_role("button", name="Check the roster").click()
    refused = page.get_by_role("region", name="Do not photograph or film (60)")
    expect(refused.get_by_role("listitem").first).to_have_text(
        f"Ana00 E. – card {declined[0].card_number} – declined photos")
    expect(refused.get_by_role("listitem").last).to_have_text(
        f"Maya14 E. – card {children[-1].card_number} – under 13, no guardian's consent")
    expect(page.get_by_role("region", name="Unknown card numbers (2)")).to_contain_text(
        "X0001, X0002")
    check_page(page, "staff-photo-roster-result")

    page.emulate_media(media="print")
    expect(page.locator(".site-header")).to_be_hidden()
    pdf = page.pdf(format="Letter")
    (SCREENSHOTS / "staff-photo-roster-print.pdf").write_bytes(pdf)
    page.set_viewport_size({"width": 730, "height": 970})  # Letter inside the print margins
    page.screenshot(path=str(SCREENSHOTS / "staff-photo-roster-print.png"), full_page=True)
    assert _pages(pdf) == 1


def _pages(pdf: bytes) -> int:
    """How many pages a PDF has: the /Count of its page tree."""
    return max(int(n) for n in re.findall(rb"/Type\s*/Pages\b.*?/Count\s+(\d+)", pdf, re.S))


def test_admin_pages_pass_axe(site, browser: Browser, new_context, check_page):
    patron = site.patron(first_name="Ana", email="ana@example.org")
    staff_account(site, "desk@library.example.org", "staff")
    staff_account(site, "admin@library.example.org", "admin")
    desk = new_context().new_page()
    sign_in(desk, site, "desk@library.example.org")
    desk.goto(f"{site.url}/staff/patrons/{patron.public_id}")

    page = new_context().new_page()
    sign_in(page, site, "admin@library.example.org")
    page.get_by_role("link", name="Access log: who viewed which patron").click()
    expect(page.get_by_role("table", name="1 entry")).to_contain_text(
        "desk@library.example.org")
    check_page(page, "staff-access-log")

    page.goto(f"{site.url}/staff/")
    page.get_by_role("link", name="Staff accounts").click()
    check_page(page, "staff-accounts")
    page.get_by_label("Email").fill("new.clerk@library.example.org")
    page.get_by_label("Role").select_option("marketing")
    page.get_by_role("button", name="Create the account").click()
    expect(page.get_by_role("status")).to_contain_text("Password, shown this once:")
    check_page(page, "staff-account-created")

    page.goto(f"{site.url}/staff/")
    page.get_by_role("link", name="Email topics").click()
    page.get_by_label("Key (lower-case letters").fill("adult_learning")
    page.get_by_label("Name in English").fill("Adult learning")
    page.get_by_label("Name in Spanish (optional)").fill("Aprendizaje para adultos")
    page.get_by_role("button", name="Save the topic").click()
    expect(page.get_by_role("status")).to_have_text("Topic adult_learning saved: Adult learning.")
    check_page(page, "staff-topics")

    page.goto(f"{site.url}/staff/")
    page.get_by_role("link", name="API keys for other systems").click()
    page.get_by_label("Name (the system that will use it)").fill("The ILS")
    page.get_by_label("consents:read: decisions, eligibility, the ledger feed").check()
    page.get_by_role("button", name="Create the key").click()
    expect(page.get_by_role("status")).to_contain_text("The key, shown this once: csk_")
    check_page(page, "staff-api-keys")

    page.goto(f"{site.url}/staff/")
    page.get_by_role("link", name="Privacy policy versions").click()
    page.get_by_label("Version (e.g. 2027-01").fill("2026-07")
    page.get_by_label("In force from").fill("2026-07-01")
    page.get_by_label("What changed").fill("Shorter IP keeping.\nOne vendor fewer.")
    page.get_by_label("A material change").check()
    page.get_by_role("button", name="Publish the version").click()
    expect(page.get_by_role("status")).to_contain_text("Policy 2026-07 is published, in force "
                                                       "from 2026-07-01.")
    expect(page.get_by_role("table")).to_contain_text("Shorter IP keeping.")
    check_page(page, "staff-policies")

    page.goto(f"{site.url}/staff/")
    page.get_by_role("link", name="Guardians' requests for a child's data").click()
    check_page(page, "staff-guardian-tasks")


def test_staff_erase_a_patron_from_their_page_and_see_it_done(site, page: Page, check_page,
                                                              csp_reports):
    patron = site.patron(first_name="Ana", email="ana.reyes@example.org")
    staff_account(site, "desk@library.example.org", "staff")
    sign_in(page, site, "desk@library.example.org")
    page.goto(f"{site.url}/staff/patrons/{patron.public_id}")

    page.get_by_label("Type the patron's card number to confirm").fill(patron.card_number)
    page.get_by_role("button", name="Erase personal data").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Erasure requests")
    expect(page.get_by_role("status")).to_contain_text("The patron's personal data is erased")
    expect(page.get_by_role("table", name="0 open, 1 done")).to_contain_text(
        "by desk@library.example.org")
    check_page(page, "staff-erasure-requests")
    with site.app.app_context():
        assert recorded(site)[-1][2] == "erasure"
    assert csp_reports == []
