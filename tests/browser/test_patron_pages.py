"""The patron's pages in a real Chromium: unsubscribing, the preference center, asking for a link,
a bad link; in English and Spanish; each checked with axe-core and photographed."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from consent_service.delivery.mailers import mailer_for
from consent_service.domain.tokens import LinkKind
from consent_service.extensions import db
from consent_service.models import ConsentEvent

pytestmark = pytest.mark.browser


def recorded(site):
    with site.app.app_context():
        return [(e.purpose, e.topic, e.decision, e.source)
                for e in db.session.scalars(select(ConsentEvent).order_by(ConsentEvent.id))]


def choose(page: Page, question: str, answer: str) -> None:
    """Pick an answer in the fieldset whose legend is `question`, by clicking its label."""
    group = page.get_by_role("group", name=question, exact=True)
    group.get_by_text(answer, exact=True).click()


@pytest.mark.parametrize("language", ["en", "es"])
def test_unsubscribing_from_a_topic(site, page, check_page, csp_reports, language):
    patron = site.patron(first_name="Ana", email="ana.reyes@example.org", language=language)
    page.goto(site.link(LinkKind.UNSUBSCRIBE, patron, "events"))
    words = {
        "en": ("Unsubscribe", "Stop email about Library events to a•••@example.org.",
               "Unsubscribe from Library events", "You are unsubscribed"),
        "es": ("Cancelar la suscripción",
               "Dejar de recibir correos sobre Library events en a•••@example.org.",
               "Cancelar la suscripción a Library events", "Su suscripción está cancelada"),
    }[language]
    expect(page.locator("html")).to_have_attribute("lang", language)
    expect(page.get_by_role("heading", level=1)).to_have_text(words[0])
    expect(page.locator("main")).to_contain_text(words[1])
    check_page(page, f"unsubscribe-{language}")
    assert recorded(site) == []

    page.get_by_role("button", name=words[2]).click()

    expect(page.get_by_role("heading", level=1)).to_have_text(words[3])
    check_page(page, f"unsubscribed-{language}")
    assert recorded(site) == [("email_marketing", "events", "opt_out", "unsubscribe_link")]
    assert csp_reports == []


@pytest.mark.parametrize("language", ["en", "es"])
def test_changing_two_choices_in_the_preference_center(site, page, check_page, csp_reports,
                                                       language):
    patron = site.patron(first_name="Ana", email="ana@example.org", language=language,
                         street="12 Aspen Way", city="Castle Rock", postal_code="80104")
    page.goto(site.link(LinkKind.PREFERENCES, patron))
    words = {
        "en": ("Your choices", "Postal mail", "Library events", "No", "Save my choices",
               "Your changes are saved", "Postal mail: No, you don't get this",
               "Library events: No, you don't get this"),
        "es": ("Sus preferencias", "Correo postal", "Library events", "No",
               "Guardar mis preferencias", "Sus cambios están guardados",
               "Correo postal: No, no lo recibe", "Library events: No, no lo recibe"),
    }[language]
    expect(page.get_by_role("heading", level=1)).to_have_text(words[0])
    check_page(page, f"preferences-{language}")

    choose(page, words[1], words[3])
    choose(page, words[2], words[3])
    page.get_by_role("button", name=words[4]).click()

    saved = page.get_by_role("status")
    expect(saved).to_contain_text(words[5])
    expect(saved).to_contain_text(words[6])
    expect(saved).to_contain_text(words[7])
    check_page(page, f"preferences-saved-{language}")
    assert sorted(recorded(site)) == [("email_marketing", "events", "opt_out", "preference_center"),
                                      ("postal_marketing", "", "opt_out", "preference_center")]
    [confirmation] = mailer_for(site.app).sent  # type: ignore[attr-defined]
    assert confirmation["To"] == "ana@example.org"
    assert csp_reports == []


def test_the_preference_center_works_without_javascript(site, new_context):
    patron = site.patron(first_name="Sam", email="sam@example.org")
    page = new_context(java_script_enabled=False).new_page()
    page.goto(site.link(LinkKind.PREFERENCES, patron))
    choose(page, "Photos and video at library events", "No")
    page.get_by_role("button", name="Save my choices").click()
    expect(page.get_by_role("status")).to_contain_text(
        "Photos and video at library events: No, not allowed")
    assert recorded(site) == [("photo_video", "", "opt_out", "preference_center")]


@pytest.mark.parametrize("language", ["en", "es"])
def test_asking_for_a_link_by_email(site, new_context, check_page, language):
    site.patron(first_name="Grace", email="okafor.family@example.org")
    page = new_context(locale={"en": "en-US", "es": "es-MX"}[language]).new_page()
    page.goto(f"{site.url}/preferences")
    label = {"en": "Email address", "es": "Correo electrónico"}[language]
    expect(page.locator("html")).to_have_attribute("lang", language)
    check_page(page, f"email-me-a-link-{language}")

    page.get_by_label(label).fill("okafor.family@example.org")
    page.get_by_role("button", name={"en": "Email me a link", "es": "Enviarme un enlace"}[
        language]).click()

    expect(page.get_by_role("heading", level=1)).to_have_text(
        {"en": "Check your email", "es": "Revise su correo"}[language])
    check_page(page, f"link-sent-{language}")
    [message] = mailer_for(site.app).sent  # type: ignore[attr-defined]
    assert message["To"] == "okafor.family@example.org"


def test_a_bad_link_explains_itself_and_offers_a_new_one(site, page, check_page):
    response = page.goto(f"{site.url}/unsubscribe/this-link-was-cut-short")
    assert response is not None and response.status == 400
    expect(page.get_by_role("heading", level=1)).to_have_text("This link does not work")
    expect(page.get_by_label("Email address")).to_be_visible()
    check_page(page, "error-bad-link")


def test_an_error_page_for_a_missing_page(site, page, check_page):
    response = page.goto(f"{site.url}/no/such/page")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Page not found")
    check_page(page, "error-not-found")


def test_the_pages_fit_a_phone_screen(site, new_context, check_page):
    patron = site.patron(first_name="Lena", email="lena.park@example.org")
    page = new_context(viewport={"width": 360, "height": 740}, is_mobile=True,
                       has_touch=True).new_page()
    for name, address in (("phone-preferences", site.link(LinkKind.PREFERENCES, patron)),
                          ("phone-unsubscribe", site.link(LinkKind.UNSUBSCRIBE, patron))):
        page.goto(address)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), name
        check_page(page, name)


def test_the_skip_link_is_the_first_stop_and_is_visible_when_focused(site, page):
    page.goto(f"{site.url}/preferences")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to main content")
    expect(skip).to_be_focused()
    box = skip.bounding_box()
    assert box is not None and box["y"] >= 0
    outline = skip.evaluate("element => getComputedStyle(element).outlineStyle")
    assert outline != "none"
    page.keyboard.press("Enter")
    assert re.search(r"#main$", page.url)


@pytest.mark.parametrize("language", ["en", "es"])
def test_asking_for_ones_data_to_be_erased_from_the_preference_center(site, page, check_page,
                                                                      csp_reports, language):
    from consent_service.models import ErasureRequest

    patron = site.patron(first_name="Iris", email="iris@example.org", language=language)
    page.goto(site.link(LinkKind.PREFERENCES, patron))
    words = {
        "en": ("Ask for my data to be erased", "Erase my data", "I understand",
               "We have asked library staff to erase your data."),
        "es": ("Pedir que se borren mis datos", "Borrar mis datos", "Entiendo",
               "Hemos pedido al personal de la biblioteca que borre sus datos."),
    }[language]
    page.get_by_role("link", name=words[0]).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(words[1])
    check_page(page, f"erasure-request-{language}")

    page.get_by_label(re.compile(words[2])).check()
    page.get_by_role("button", name=words[0]).click()

    expect(page.get_by_role("status")).to_have_text(words[3])
    check_page(page, f"erasure-requested-{language}")
    with site.app.app_context():
        asked = [(t.requested_by, t.status) for t in db.session.scalars(select(ErasureRequest))]
    assert asked == [("patron", "open")]
    assert csp_reports == []
