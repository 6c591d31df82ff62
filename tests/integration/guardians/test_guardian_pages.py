"""The guardian's pages: the notice and confirmation emails, answering a request, the family page,
bad links, another family's child, two guardians, vendor sharing by ID check."""

from __future__ import annotations

import re
from datetime import date, timedelta
from html import unescape

import pytest
from sqlalchemy import select

from consent_service import runtime
from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.domain.tokens import LinkKind
from consent_service.extensions import db
from consent_service.models import ConsentEvent, ErasureRequest, FamilyRequest, Patron
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.guardians.choices import child_choices
from consent_service.services.standing import load_standings
from tests.conftest import NOW
from tests.integration.guardians.helpers import (
    CHILD_BORN,
    answer,
    family_post,
    html_of,
    invoke,
    last_token,
    link,
    links_of,
    mail_to,
    requests_of,
    text_of,
    tokens_in,
)
from tests.integration.public_pages import (
    FAR_FUTURE,
    csrf_token,
    events,
    ledger_count,
    link_token,
    main_text,
    tampered,
)

UNDER_13 = {"child_online_services", "child_programs", "minor_card", "email_marketing:events",
            "email_marketing:kids_teens", "postal_marketing", "photo_video", "contact_update",
            "third_party_modeling"}


@pytest.fixture
def notice_token(app, runner, maya, pat, topics):
    link(runner, maya, card=pat.card_number)
    return last_token(app, "pat@example.org", "guardian")


def checkboxes(html: str) -> dict[str, bool]:
    """The page's `allow` tick boxes: value -> ticked."""
    return {m.group(2): "checked" in m.group(0)
            for m in re.finditer(r'<input type="checkbox" name="(allow)" value="([^"]+)"[^>]*>', html)}


# -- the emails -----------------------------------------------------------------------------------

NOTICE_WORDS = {
    "en": ["Maya", "WHAT THE LIBRARY COLLECTS ABOUT MAYA, AND WHY", "Online services", "Programs",
           "A library card", "Email from the library", "Library events", "Kids & teens",
           "Photos and video", "SHARING WITH VENDORS: A SEPARATE DECISION",
           "Nothing about Maya is shared with vendors without your separate consent",
           "Example Address Services", "https://address-services.example/privacy",
           "Example Outreach Analytics", "https://outreach-analytics.example/privacy",
           "HOW TO DECIDE", "The link works for 7 days",
           "If we have no answer by June 15, 2026 (14 days after we first asked), we delete the "
           "contact details we collected to ask you",
           "The library's privacy policy: https://library.example.org/privacy"],
    "es": ["Maya", "QUÉ DATOS DE MAYA RECOGE LA BIBLIOTECA, Y PARA QUÉ", "Servicios en línea",
           "Programas", "Una tarjeta de la biblioteca", "Correos de la biblioteca",
           "Library events", "Kids & teens", "Fotos y video",
           "COMPARTIR DATOS CON PROVEEDORES: UNA DECISIÓN APARTE",
           "No se comparte nada de Maya con proveedores sin su consentimiento aparte",
           "Example Address Services", "https://address-services.example/privacy",
           "Example Outreach Analytics", "https://outreach-analytics.example/privacy",
           "CÓMO DECIDIR", "El enlace funciona durante 7 días",
           "Si no tenemos su respuesta antes del 15 de junio de 2026 (14 días después de "
           "preguntarle), borramos los datos de contacto que recogimos para preguntarle",
           "La política de privacidad de la biblioteca: https://library.example.org/privacy"],
}


@pytest.mark.parametrize("language", ["en", "es"])
def test_the_notice_says_everything_a_guardian_must_know_in_their_language(
        app, runner, ctx, session, make_patron, maya, topics, language):
    make_patron(card="G0009", first_name="Lu", email="lu@example.org", preferred_language=language)
    link(runner, maya, card="G0009")

    [notice] = mail_to(app, "lu@example.org")
    text, html = text_of(notice), html_of(notice)
    subject = {"en": "Your consent is needed for Maya at Example County Library",
               "es": "Se necesita su consentimiento para Maya en Example County Library"}[language]
    assert notice["Subject"] == subject
    for words in NOTICE_WORDS[language]:
        assert words in text, words
    flat_html = " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split()).casefold()
    for words in NOTICE_WORDS[language]:
        if "://" not in words:  # headings are capitals in the text only; links are hrefs
            assert words.casefold() in flat_html, words
    for url in ("https://address-services.example/privacy", "https://library.example.org/privacy"):
        assert f'href="{url}"' in html
    [request] = requests_of(session, maya)
    for body in (text, html):
        [token] = set(tokens_in(body, "guardian"))
        claims = ctx.signer.verify(LinkKind.GUARDIAN, token, now=NOW)
        assert (claims.patron_id, claims.ref) == (maya.public_id, request.public_id)
    assert "maya.kid@example.org" not in text  # the child's address is not the guardian's business
    assert "including your email address" not in text  # a guardian patron's details are kept


def test_a_guardian_known_only_by_email_is_told_their_address_is_deleted_without_an_answer(
        app, runner, maya, topics):
    link(runner, maya, email="Grandma@Example.org")
    [notice] = mail_to(app, "grandma@example.org")
    assert "including your email address" in text_of(notice)
    assert notice["Subject"] == "Your consent is needed for Maya at Example County Library"


def test_with_an_id_check_the_notice_says_vendor_sharing_is_given_at_the_desk(id_check_app):
    with id_check_app.app_context():
        db.session.add(Patron(card_number="K9", first_name="Ivy", email=None,
                              birth_date=CHILD_BORN, created_at=NOW, updated_at=NOW))
        db.session.commit()
    result = invoke(id_check_app.test_cli_runner(), "guardians", "link", "K9",
                    "--guardian-email", "dad@example.org")
    assert result.exit_code == 0, result.output
    [notice] = mail_to(id_check_app, "dad@example.org")
    assert "bring an ID to any library desk" in text_of(notice)
    assert "Email from the library" not in text_of(notice)  # Ivy has no email address


# -- the guardian's page --------------------------------------------------------------------------


def test_the_page_names_the_child_and_leaves_every_box_unticked(client, session, notice_token):
    page = client.get(f"/guardian/{notice_token}")

    assert page.status_code == 200
    text = main_text(page.text)
    assert "Your consent for Maya" in text
    assert "Because Maya is under 13" in text
    assert checkboxes(page.text) == dict.fromkeys(UNDER_13, False)
    assert "Sharing with vendors: a separate decision" in text
    assert "Example Address Services privacy policy" in text
    assert "I am Maya's parent or legal guardian" in text and "Your full name" in text
    assert page.headers["Cache-Control"] == "no-store"
    assert ledger_count(session) == 0  # opening the page changes nothing


def test_answering_records_each_decision_as_the_guardians_with_the_evidence(
        client, session, ctx, maya, pat, notice_token):
    response = answer(client, notice_token,
                      ["child_programs", "photo_video", "email_marketing:events",
                       "contact_update"], name="  Pat   Parent ")

    assert response.status_code == 200
    text = main_text(response.text)
    assert "Your decisions are saved" in text
    assert "Programs: Allowed" in text and "Online services: Not allowed" in text
    assert "Email about Library events: Allowed" in text
    assert "We are sending a confirmation to p•••@example.org" in text
    recorded = {(e.purpose, e.topic, e.decision) for e in events(session)}
    assert recorded == {
        ("child_programs", "", "opt_in"), ("email_marketing", "events", "opt_in"),
        ("photo_video", "", "opt_in"), ("contact_update", "", "opt_in"),
    }  # a box left unticked as shown records nothing
    [guardian_link] = links_of(session, maya)
    [request] = requests_of(session, maya)
    for event in events(session):
        assert (event.actor, event.source, event.actor_ref, event.patron_id, event.effective) == (
            "guardian", "guardian_page", guardian_link.public_id, maya.id, True)
        assert event.evidence["method"] == "email_plus"
        assert event.evidence["notice_version"] == request.notice_version
        assert event.evidence["typed_name"] == "Pat Parent"
        assert event.evidence["confirmed_guardian"] == "yes"
        assert event.evidence["guardian_link"] == guardian_link.public_id
        assert event.evidence["request"] == request.public_id
        assert event.evidence["token_id"] and "ip" in event.evidence
    assert (request.status, request.answered_at) == ("answered", NOW)


def test_an_unticked_email_box_does_not_stop_email_to_a_shared_family_address(
        client, session, ctx, make_patron, runner, app, topics):
    parent = make_patron(card="G0100", first_name="Sam", email="home@example.org")
    child = make_patron(card="K0100", first_name="Milo", email="home@example.org",
                        birth_date=CHILD_BORN)
    link(runner, child, card=parent.card_number)

    answer(client, last_token(app, "home@example.org", "guardian"), ["email_marketing:events"])

    email_events = [e for e in events(session) if e.purpose == "email_marketing"]
    assert [(e.topic, e.decision) for e in email_events] == [("events", "opt_in")]
    standing = load_standings(session, [parent])[parent.id]
    kids = ctx.catalog.get("email_marketing")
    assert standing.verdict(kids, "kids_teens", NOW.date()).allowed  # the parent still gets it


def test_a_second_request_shows_earlier_consent_ticked_and_answering_it_keeps_that_consent(
        app, client, session, ctx, clock, runner, maya, pat, notice_token):
    answer(client, notice_token, ["child_programs"])  # "programs only"
    link(runner, maya, email="grandma@example.org")  # a second guardian is asked later
    clock.at = NOW + timedelta(days=3)
    second = last_token(app, "grandma@example.org", "guardian")

    page = client.get(f"/guardian/{second}")
    assert checkboxes(page.text)["child_programs"] is True
    assert checkboxes(page.text)["photo_video"] is False
    assert "The ticked boxes show what a parent or guardian has allowed already" in main_text(
        page.text)
    response = answer(client, second, ["child_programs", "photo_video"], page_html=page.text)

    assert "Programs: Allowed" in main_text(response.text)
    view = child_choices(session, runtime.context(), maya, now=clock.at)
    assert {choice.key for choice in view.choices if choice.given} == {
        "child_programs", "photo_video"}
    later = [(e.purpose, e.decision) for e in events(session) if e.occurred_at > NOW]
    assert later == [("photo_video", "opt_in")]  # the untouched programs box recorded nothing


def test_an_untouched_box_on_a_page_opened_earlier_does_not_undo_another_guardians_yes(
        app, client, session, runner, clock, maya, pat, notice_token):
    link(runner, maya, email="alex@example.org")
    alex_token = last_token(app, "alex@example.org", "guardian")
    alex_page = client.get(f"/guardian/{alex_token}").text  # opened first, nothing allowed yet
    answer(client, notice_token, ["photo_video"])  # Pat allows photos meanwhile
    clock.at = NOW + timedelta(hours=1)

    answer(client, alex_token, ["child_programs"], page_html=alex_page)  # photos left untouched

    view = child_choices(session, runtime.context(), maya, now=clock.at)
    assert {choice.key for choice in view.choices if choice.given} == {
        "photo_video", "child_programs"}
    assert [e.decision for e in events(session) if e.purpose == "photo_video"] == ["opt_in"]


def test_unticking_a_box_shown_ticked_on_the_request_page_withdraws_it(
        client, session, clock, maya, notice_token):
    answer(client, notice_token, ["child_programs", "photo_video"])
    clock.at = NOW + timedelta(days=1)

    answer(client, notice_token, ["child_programs"])

    photo = [(e.decision, e.occurred_at) for e in events(session) if e.purpose == "photo_video"]
    assert photo == [("opt_in", NOW), ("opt_out", NOW + timedelta(days=1))]
    assert [e.decision for e in events(session) if e.purpose == "child_programs"] == ["opt_in"]


def test_the_confirmation_goes_to_the_same_address_with_a_link_to_the_family_page(
        app, client, ctx, session, maya, notice_token):
    answer(client, notice_token, ["child_programs"])

    [confirmation] = mail_to(app, "pat@example.org", "are saved")
    assert confirmation["Subject"] == "Your decisions for Maya are saved"
    text = text_of(confirmation)
    assert "- Programs: Allowed" in text and "- Online services: Not allowed" in text
    assert "- Sharing to reach more people: Not allowed" in text
    [token] = set(tokens_in(text, "family")) | set(tokens_in(html_of(confirmation), "family"))
    [guardian_link] = links_of(session, maya)
    assert ctx.signer.verify(LinkKind.FAMILY, token, now=NOW).patron_id == guardian_link.public_id
    assert "https://library.example.org/privacy" in text


def test_the_confirmation_is_in_the_guardians_language(app, client, runner, make_patron,
                                                        topics):
    child = make_patron(card="K0200", first_name="Lía", email=None, birth_date=CHILD_BORN,
                        preferred_language="es")
    link(runner, child, email="mama@example.org")  # no patron record: the child's language
    answer(client, last_token(app, "mama@example.org", "guardian"), ["photo_video"])

    [confirmation] = mail_to(app, "mama@example.org", "Guardamos")
    text = text_of(confirmation)
    assert confirmation["Subject"] == "Guardamos sus decisiones para Lía"
    assert "- Fotos y video: Permitido" in text and "- Programas: No permitido" in text
    assert tokens_in(text, "family")


@pytest.mark.parametrize(("confirm", "name", "message"), [
    (False, "Pat Parent", "Tick this box to confirm you are the child's parent or legal guardian."),
    (True, "   ", "Type your full name."),
])
def test_without_the_confirmation_and_a_typed_name_nothing_is_recorded(
        client, session, maya, notice_token, confirm, name, message):
    response = answer(client, notice_token, ["child_programs"], confirm=confirm, name=name)

    assert response.status_code == 400
    assert message in main_text(response.text)
    assert checkboxes(response.text)["child_programs"] is True  # the ticks survive the error
    assert ledger_count(session) == 0
    assert requests_of(session, maya)[0].status == "pending"


@pytest.mark.parametrize("name", ["Pat\x00 Parent", "Pat \u202eParent"])
def test_a_typed_name_with_a_control_character_is_refused_and_nothing_recorded(
        client, session, maya, notice_token, name):
    response = answer(client, notice_token, ["child_programs"], name=name)

    assert response.status_code == 400
    assert "it cannot be stored" in main_text(response.text)
    assert ledger_count(session) == 0
    assert requests_of(session, maya)[0].status == "pending"


def test_a_post_without_the_pages_csrf_token_is_refused(client, session, notice_token):
    response = client.post(f"/guardian/{notice_token}", buffered=True,
                           data={"allow": ["child_programs"], "confirm": "y", "name": "Pat"})
    assert response.status_code == 400
    assert ledger_count(session) == 0


def test_answering_again_is_a_change_and_the_latest_answer_stands(
        client, session, clock, maya, notice_token):
    answer(client, notice_token, ["child_programs", "photo_video"])
    clock.at = NOW + timedelta(days=2)

    again = client.get(f"/guardian/{notice_token}")
    assert "You answered on June 1, 2026" in main_text(again.text)
    assert checkboxes(again.text)["child_programs"] is True  # a later visit shows what is in force
    answer(client, notice_token, ["photo_video"])

    session.expire_all()
    view = child_choices(session, runtime.context(), maya, now=clock.at)
    given = {choice.key for choice in view.choices if choice.given}
    assert given == {"photo_video"}
    programs = [e for e in events(session) if e.purpose == "child_programs"]
    assert [(e.decision, e.occurred_at) for e in programs] == [
        ("opt_in", NOW), ("opt_out", NOW + timedelta(days=2))]


def test_a_link_to_another_childs_request_does_not_open(client, session, ctx, runner, app, maya,
                                                         make_patron, notice_token):
    other = make_patron(card="K0300", first_name="Noor", birth_date=CHILD_BORN, email=None)
    link(runner, other, email="noor.mom@example.org")
    [noor_request] = requests_of(session, other)
    forged = ctx.signer.sign(LinkKind.GUARDIAN, maya.public_id, ref=noor_request.public_id)

    assert client.get(f"/guardian/{forged}").status_code == 400
    assert client.get(f"/guardian/{ctx.signer.sign(LinkKind.GUARDIAN, maya.public_id)}"
                      ).status_code == 400  # no request named at all


@pytest.mark.parametrize("problem", ["expired", "tampered", "preferences link", "family link"])
def test_bad_guardian_links_show_a_400_page_and_record_nothing(
        client, session, ctx, clock, maya, notice_token, problem):
    page = client.get(f"/guardian/{notice_token}")  # a session and CSRF token, as a browser has
    token = {
        "expired": notice_token,
        "tampered": tampered(notice_token),
        "preferences link": link_token(ctx, LinkKind.PREFERENCES, maya),
        "family link": ctx.signer.sign(LinkKind.FAMILY, links_of(session, maya)[0].public_id),
    }[problem]
    if problem == "expired":
        clock.at = FAR_FUTURE
    data = {"csrf_token": csrf_token(page.text), "allow": ["child_programs"], "confirm": "y",
            "name": "Pat"}

    for response in (client.get(f"/guardian/{token}"),
                     client.post(f"/guardian/{token}", data=data, buffered=True)):
        assert response.status_code == 400
        heading = "This link has expired" if problem == "expired" else "This link does not work"
        assert heading in main_text(response.text)
        assert "Nothing was changed" in main_text(response.text)
    assert ledger_count(session) == 0


def test_an_expired_request_no_longer_opens_even_with_a_link_that_has_not(
        client, session, runner, clock, maya, notice_token):
    clock.at = NOW + timedelta(days=14, minutes=1)  # 7-day link lifetimes are by signing time
    response = client.get(f"/guardian/{notice_token}")
    assert response.status_code == 400
    assert "This link has expired" in main_text(response.text)
    assert ledger_count(session) == 0


# -- the family page ------------------------------------------------------------------------------


@pytest.fixture
def family(app, client, runner, session, make_patron, maya, pat, notice_token):
    """Pat, guardian of Maya and of her brother Leo; Noor is another family's child."""
    leo = make_patron(card="K0002", first_name="Leo", email=None, birth_date=date(2020, 8, 8))
    noor = make_patron(card="K0003", first_name="Noor", email=None, birth_date=CHILD_BORN)
    link(runner, leo, card=pat.card_number)
    link(runner, noor, email="noor.mom@example.org")
    answer(client, notice_token, ["child_programs", "photo_video"])
    token = last_token(app, "pat@example.org", "family")
    return {"token": token, "maya": maya, "leo": leo, "noor": noor}


def test_the_family_page_shows_every_child_of_this_guardian_and_nobody_else(client, family):
    page = client.get(f"/family/{family['token']}")

    assert page.status_code == 200
    text = main_text(page.text)
    assert "Maya" in text and "Leo" in text and "Noor" not in text
    assert family["noor"].public_id not in page.text
    assert "Save choices for Maya" in text and "Save choices for Leo" in text
    assert "Allowed since June 1, 2026" in text  # Maya's programs and photos
    assert "Not allowed: nobody has decided yet" in text  # Leo: no answer yet
    boxes = re.findall(r'id="(p_[\w-]+)-allow-child_programs"[^>]*?(checked)?>', page.text)
    assert sorted(boxes) == sorted([(family["maya"].public_id, "checked"),
                                    (family["leo"].public_id, "")])


def test_revoking_on_the_family_page_records_an_opt_out_and_confirms_it_by_email(
        app, client, session, clock, family):
    clock.at = NOW + timedelta(days=1)
    before = ledger_count(session)

    response = family_post(client, family["token"], family["maya"], "decide", ["child_programs"])

    assert response.status_code == 200
    text = main_text(response.text)
    assert "Saved for Maya" in text and "Photos and video: Not allowed" in text
    new = events(session)[before:]
    assert [(e.purpose, e.decision, e.source, e.actor, e.evidence["method"]) for e in new] == [
        ("photo_video", "opt_out", "guardian_page", "guardian", "email_plus")]
    [confirmation] = [m for m in mail_to(app, "pat@example.org", "are saved")
                      if "Photos and video: Not allowed" in text_of(m)
                      and "Programs" not in text_of(m)]
    assert tokens_in(text_of(confirmation), "family")


def test_saving_the_family_page_unchanged_records_nothing(client, session, family):
    before = ledger_count(session)
    response = family_post(client, family["token"], family["maya"], "decide",
                           ["child_programs", "photo_video"])
    assert "Nothing changed" in main_text(response.text)
    assert ledger_count(session) == before


def test_a_family_page_opened_before_another_guardians_change_does_not_undo_it(
        app, client, session, runner, clock, maya, family):
    pat_page = client.get(f"/family/{family['token']}").text  # Maya: programs and photos allowed
    link(runner, maya, email="alex@example.org")
    clock.at = NOW + timedelta(hours=1)
    answer(client, last_token(app, "alex@example.org", "guardian"),
           ["child_programs", "photo_video", "postal_marketing"])  # Alex adds postal mail
    clock.at = NOW + timedelta(hours=2)

    family_post(client, family["token"], maya, "decide", ["child_programs"], page_html=pat_page)

    decided = [(e.purpose, e.decision) for e in events(session) if e.occurred_at > NOW]
    assert decided == [("postal_marketing", "opt_in"), ("photo_video", "opt_out")]


@pytest.mark.parametrize("action", ["decide", "erasure"])
def test_a_guardian_cannot_see_or_change_another_familys_child(client, session, family, action):
    before = ledger_count(session)

    response = family_post(client, family["token"], family["noor"], action,
                           ["child_programs", "photo_video"])

    assert response.status_code == 404
    assert ledger_count(session) == before
    assert session.scalars(select(FamilyRequest)).all() == []
    assert session.scalars(select(ErasureRequest)).all() == []
    assert family_post(client, family["token"], "p_no-such-child", action).status_code == 404


@pytest.mark.parametrize("action", ["delete_all", "download"])
def test_an_unknown_action_on_the_family_page_is_refused(client, session, family, action):
    # a child's data is downloaded at once from its own page now, not asked of staff
    assert family_post(client, family["token"], family["maya"], action).status_code == 400
    assert session.scalars(select(FamilyRequest)).all() == []


def test_asking_for_a_childs_erasure_gives_staff_one_erasure_request_per_child(
        client, session, runner, family):
    first = family_post(client, family["token"], family["leo"], "erasure")
    again = family_post(client, family["token"], family["leo"], "erasure")
    erase = family_post(client, family["token"], family["maya"], "erasure")

    assert "We have asked for Leo's data to be erased" in main_text(first.text)
    assert "Library staff will contact you about it." in main_text(first.text)
    assert "You asked for this already" in main_text(again.text)
    assert "We have asked for Maya's data to be erased" in main_text(erase.text)
    tasks = invoke(runner, "guardians", "tasks")
    lines = tasks.output.strip().splitlines()
    # an erasure is an erasure request, carried out from the staff erasure requests page; the
    # family tasks (`guardians tasks`) are for what staff must do by hand, and there is none
    assert lines == ["no open requests"]
    erasures = session.scalars(select(ErasureRequest).order_by(ErasureRequest.id)).all()
    assert [(e.requested_by, e.status) for e in erasures] == [("guardian", "open")] * 2
    assert [session.get(Patron, e.patron_id).card_number for e in erasures] == ["K0002", "K0001"]
    repeated = invoke(runner, "guardians", "done", "1")
    assert repeated.exit_code == 1 and repeated.output == "Error: no open family request 1\n"


@pytest.mark.parametrize("problem", ["expired", "tampered", "guardian link"])
def test_bad_family_links_show_a_400_page_and_record_nothing(client, session, clock, family,
                                                             notice_token, problem):
    before = ledger_count(session)
    page = client.get(f"/family/{family['token']}")  # a session and CSRF token, as a browser has
    token = {"expired": family["token"], "tampered": tampered(family["token"]),
             "guardian link": notice_token}[problem]
    if problem == "expired":
        clock.at = FAR_FUTURE
    data = {"csrf_token": csrf_token(page.text), "child": family["maya"].public_id,
            "action": "decide", "allow": []}

    for response in (client.get(f"/family/{token}"),
                     client.post(f"/family/{token}", data=data, buffered=True)):
        assert response.status_code == 400
        assert "Nothing was changed" in main_text(response.text)
    assert ledger_count(session) == before


def test_two_guardians_may_both_decide_the_latest_stands_and_both_see_it(
        app, client, session, runner, clock, maya, pat, notice_token):
    link(runner, maya, email="alex@example.org")
    alex_token = last_token(app, "alex@example.org", "guardian")
    answer(client, notice_token, ["photo_video"])  # Pat allows photos on day 0
    clock.at = NOW + timedelta(hours=5)
    answer(client, alex_token, [])  # Alex refuses everything, later
    pat_family = last_token(app, "pat@example.org", "family")
    alex_family = last_token(app, "alex@example.org", "family")

    for token in (pat_family, alex_family):
        page = client.get(f"/family/{token}")
        assert re.search(r'value="photo_video" id="[^"]+" aria-describedby="[^"]+"\s*>', page.text)
        assert "Not allowed since June 1, 2026" in main_text(page.text)

    clock.at = NOW + timedelta(days=1)
    family_post(client, pat_family, maya, "decide", ["photo_video"])  # Pat again, latest
    for token in (pat_family, alex_family):
        assert re.search(r'value="photo_video" id="[^"]+" aria-describedby="[^"]+" checked>',
                         client.get(f"/family/{token}").text)
    photo = [(e.decision, e.actor_ref) for e in events(session) if e.purpose == "photo_video"]
    pat_ref, alex_ref = (guardian_link.public_id for guardian_link in links_of(session, maya))
    assert photo == [("opt_in", pat_ref), ("opt_out", alex_ref), ("opt_in", pat_ref)]
    assert all(r.status == "answered" for r in requests_of(session, maya))


def test_a_teens_guardian_decides_the_card_and_sees_the_teens_own_decisions(
        app, client, session, ctx, runner, make_patron, topics):
    teen = make_patron(card="K0400", first_name="Ren", email="ren@example.org",
                       birth_date=date(2011, 1, 15))  # 15
    record_decision(session, ctx, DecisionRequest(
        purpose="photo_video", decision=Decision.OPT_OUT, source=Source.PREFERENCE_CENTER,
        actor=Actor.PATRON, occurred_at=NOW - timedelta(days=3), patron=teen), now=NOW)
    session.commit()
    link(runner, teen, email="ren.dad@example.org")
    token = last_token(app, "ren.dad@example.org", "guardian")

    page = client.get(f"/guardian/{token}")
    assert checkboxes(page.text) == {"minor_card": False}
    assert "Because Ren is under 17, a library card" in main_text(page.text)
    answer(client, token, ["minor_card"])
    family_page = client.get(f"/family/{last_token(app, 'ren.dad@example.org', 'family')}")
    text = main_text(family_page.text)
    assert "What Ren decides now" in text
    assert "Photos and video: Not allowed since May 29, 2026" in text
    assert checkboxes(family_page.text) == {"minor_card": True}


# -- vendor sharing by ID check -------------------------------------------------------------------


def test_with_an_id_check_the_page_offers_no_vendor_sharing_and_staff_record_it(id_check_app):
    with id_check_app.app_context():
        db.session.add_all([
            Patron(card_number="K5", first_name="Ivy", birth_date=CHILD_BORN, created_at=NOW,
                   updated_at=NOW),
            Patron(card_number="G5", first_name="Ola", email="ola@example.org",
                   address_key=runtime.context(id_check_app).address_key("ola@example.org"),
                   birth_date=date(1980, 1, 1), created_at=NOW, updated_at=NOW)])
        db.session.commit()
    runner, client = id_check_app.test_cli_runner(), id_check_app.test_client()
    assert invoke(runner, "guardians", "link", "K5", "--guardian-card", "G5").exit_code == 0
    token = last_token(id_check_app, "ola@example.org", "guardian")

    page = client.get(f"/guardian/{token}")
    assert "needs a check of your ID at a library desk" in main_text(page.text)
    assert "contact_update" not in checkboxes(page.text)
    answer(client, token, ["child_programs", "contact_update"])  # a forged tick is ignored

    with id_check_app.app_context():
        vendor = db.session.scalars(select(ConsentEvent).where(
            ConsentEvent.purpose.in_(("contact_update", "third_party_modeling")))).all()
        assert vendor == []
    result = invoke(runner, "guardians", "verify-id", "K5", "--guardian", "G5", "--purpose",
                    "contact_update", "--staff", "J. Rivera")
    assert result.exit_code == 0
    assert result.output == ("recorded: contact_update allowed for patron K5 by their guardian "
                             "(ID checked by J. Rivera)\n")
    with id_check_app.app_context():
        [event] = db.session.scalars(select(ConsentEvent).where(
            ConsentEvent.purpose == "contact_update")).all()
        assert (event.decision, event.actor, event.source) == ("opt_in", "guardian", "staff_desk")
        assert event.evidence["method"] == "id_check" and event.evidence["staff"] == "J. Rivera"
    confirmation = mail_to(id_check_app, "ola@example.org", "are saved")[-1]
    assert "- Sharing to keep contact details current: Allowed" in text_of(confirmation)

    family_page = client.get(f"/family/{last_token(id_check_app, 'ola@example.org', 'family')}")
    boxes = checkboxes(family_page.text)
    assert boxes["contact_update"] is True and "third_party_modeling" not in boxes
    assert "You can withdraw it here" in main_text(family_page.text)


def test_verify_id_refuses_what_it_cannot_record_with_one_line(runner, make_patron, maya, pat):
    make_patron(card="T1", birth_date=date(2010, 1, 1))
    invoke(runner, "guardians", "link", "T1", "--guardian-card", pat.card_number)
    cases = [
        (["K0001", "--guardian", "G0001"], "G0001 is not linked to patron K0001 as a guardian"),
        (["T1", "--guardian", "G0001"], "patron T1 is not under 13: sharing with vendors is not "
                                        "a guardian's decision"),
    ]
    for args, message in cases:
        result = invoke(runner, "guardians", "verify-id", *args, "--purpose", "contact_update",
                        "--staff", "J")
        assert (result.exit_code, result.output) == (1, f"Error: {message}\n")
    wrong = runner.invoke(args=["guardians", "verify-id", "K0001", "--guardian", "G0001",
                                "--purpose", "photo_video", "--staff", "J"])
    assert wrong.exit_code == 2
