"""A guardian in a real Chromium: from the notice email's link to the confirmation, then from the
confirmation email's family link to withdrawing one consent; every page checked with axe-core and
photographed, and the two emails written as .eml files under var/mail/guardian-flow/."""

from __future__ import annotations

import email
import email.policy
import re
import shutil
from datetime import date
from email.message import EmailMessage
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Page, expect
from sqlalchemy import select

from consent_service.delivery.mailers import mailer_for
from consent_service.extensions import db
from consent_service.models import ConsentEvent

pytestmark = pytest.mark.browser

MAIL_DIR = Path(__file__).resolve().parents[2] / "var" / "mail" / "guardian-flow"


def write_mail_as_files(app: Flask, directory: Path) -> None:
    """Switch the live site to the file mail backend (one .eml per message in `directory`)."""
    shutil.rmtree(directory, ignore_errors=True)
    app.config.update(MAIL_BACKEND="file", MAIL_FILE_DIR=str(directory))
    app.extensions.pop("consent_service.mailer", None)  # mail.mailer_for builds it again


def read_eml(template: str) -> tuple[Path, EmailMessage]:
    """The newest .eml the app wrote for `template`."""
    paths = sorted(MAIL_DIR.glob(f"*-{template}.eml"), key=lambda p: int(p.name.split("-")[0]))
    assert paths, f"no {template} message in {MAIL_DIR}"
    message = email.message_from_bytes(paths[-1].read_bytes(), policy=email.policy.default)
    return paths[-1], message  # type: ignore[return-value]


def link_in(message: EmailMessage, base: str, kind: str) -> str:
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    [url] = set(re.findall(rf"{re.escape(base)}/{kind}/[\w.-]+", text))
    return url


def recorded(app: Flask) -> list[tuple[str, str, str, str]]:
    with app.app_context():
        return [(e.purpose, e.topic, e.decision, e.actor)
                for e in db.session.scalars(select(ConsentEvent).order_by(ConsentEvent.id))]


def test_a_guardian_answers_from_the_notice_then_withdraws_from_the_family_page(
        site, page: Page, check_page, csp_reports):
    write_mail_as_files(site.app, MAIL_DIR)
    guardian = site.patron(first_name="Pat", email="pat.parent@example.org")
    child = site.patron(first_name="Maya", email="maya@example.org", birth_date=date(2018, 3, 3))
    result = site.app.test_cli_runner().invoke(
        args=["guardians", "link", child.card_number, "--guardian-card", guardian.card_number])
    assert result.exit_code == 0, result.output

    notice_path, notice = read_eml("guardian_notice")
    assert notice["To"] == "pat.parent@example.org"
    page.goto(link_in(notice, site.url, "guardian"))

    expect(page.get_by_role("heading", level=1)).to_have_text("Your consent for Maya")
    for label in ("Online services", "Programs", "Photos and video",
                  "Sharing to keep contact details current"):
        expect(page.get_by_label(label, exact=True)).not_to_be_checked()
    check_page(page, "guardian-request")

    page.get_by_label("Programs", exact=True).check()
    page.get_by_label("Photos and video", exact=True).check()
    page.get_by_label("Email about Library events", exact=True).check()
    page.get_by_label("I am Maya's parent or legal guardian").check()
    page.get_by_label("Your full name").fill("Pat Parent")
    page.get_by_role("button", name="Save my decisions").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Your decisions are saved")
    saved = page.get_by_role("status")
    expect(saved).to_contain_text("Programs: Allowed")
    expect(saved).to_contain_text("Online services: Not allowed")
    check_page(page, "guardian-answered")
    assert ("photo_video", "", "opt_in", "guardian") in recorded(site.app)

    confirmation_path, confirmation = read_eml("guardian_confirmation")
    assert confirmation["To"] == "pat.parent@example.org"
    page.goto(link_in(confirmation, site.url, "family"))

    expect(page.get_by_role("heading", level=1)).to_have_text("Your children's choices")
    photos = page.get_by_label("Photos and video", exact=True)
    expect(photos).to_be_checked()
    check_page(page, "family")

    photos.uncheck()
    page.get_by_role("button", name="Save choices for Maya").click()

    saved = page.get_by_role("status")
    expect(saved).to_contain_text("Saved for Maya")
    expect(saved).to_contain_text("Photos and video: Not allowed")
    expect(page.get_by_label("Photos and video", exact=True)).not_to_be_checked()
    check_page(page, "family-saved")
    assert recorded(site.app)[-1] == ("photo_video", "", "opt_out", "guardian")
    assert csp_reports == []
    print(f"\nnotice: {notice_path}\nconfirmation: {confirmation_path}")


def test_the_guardians_page_in_spanish_and_a_bad_link(site, new_context, check_page):
    page = new_context(locale="es-MX").new_page()
    guardian = site.patron(first_name="Lucía", email="lucia@example.org", language="es")
    child = site.patron(first_name="Tomás", email=None, birth_date=date(2019, 9, 9),
                        language="es")
    result = site.app.test_cli_runner().invoke(
        args=["guardians", "link", child.card_number, "--guardian-card", guardian.card_number])
    assert result.exit_code == 0, result.output
    [notice] = mailer_for(site.app).sent  # type: ignore[attr-defined]
    page.goto(link_in(notice, site.url, "guardian"))

    expect(page.locator("html")).to_have_attribute("lang", "es")
    expect(page.get_by_role("heading", level=1)).to_have_text("Su consentimiento para Tomás")
    expect(page.get_by_label("Soy la madre, el padre o el tutor legal de Tomás")).not_to_be_checked()
    check_page(page, "guardian-request-es")

    page.goto(f"{site.url}/guardian/not-a-real-link")
    expect(page.get_by_role("heading", level=1)).to_have_text("Este enlace no funciona")
    check_page(page, "guardian-bad-link-es")


def test_a_second_guardian_sees_what_the_first_allowed_and_answering_keeps_it(
        site, page: Page, check_page):
    first = site.patron(first_name="Pat", email="pat.first@example.org")
    second = site.patron(first_name="Alex", email="alex.second@example.org")
    child = site.patron(first_name="Noor", email=None, birth_date=date(2018, 3, 3))
    runner = site.app.test_cli_runner()
    for guardian in (first, second):
        result = runner.invoke(args=["guardians", "link", child.card_number, "--guardian-card",
                                     guardian.card_number])
        assert result.exit_code == 0, result.output
    notices = {m["To"]: m for m in mailer_for(site.app).sent}  # type: ignore[attr-defined]

    def answer(guardian: str, tick: str, name: str) -> None:
        page.goto(link_in(notices[guardian], site.url, "guardian"))
        page.get_by_label(tick, exact=True).check()
        page.get_by_label("I am Noor's parent or legal guardian").check()
        page.get_by_label("Your full name").fill(name)
        page.get_by_role("button", name="Save my decisions").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Your decisions are saved")

    answer("pat.first@example.org", "Programs", "Pat First")
    page.goto(link_in(notices["alex.second@example.org"], site.url, "guardian"))
    expect(page.get_by_label("Programs", exact=True)).to_be_checked()
    expect(page.get_by_text("The ticked boxes show what a parent or guardian has allowed")
           ).to_be_visible()
    check_page(page, "guardian-request-second")
    answer("alex.second@example.org", "Photos and video", "Alex Second")

    saved = page.get_by_role("status")
    expect(saved).to_contain_text("Programs: Allowed")
    expect(saved).to_contain_text("Photos and video: Allowed")
    assert [row for row in recorded(site.app) if row[2] == "opt_out"] == []
