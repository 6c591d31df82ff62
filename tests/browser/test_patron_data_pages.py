"""A person's data in a real Chromium: from the preference center (which shows the policy in
force) to the data page, the JSON download and a consent receipt; in English and Spanish; each
page checked with axe-core and photographed."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from consent_service import runtime
from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.domain.tokens import LinkKind
from consent_service.extensions import db
from consent_service.models import Patron, PolicyVersion
from consent_service.services.decisions import DecisionRequest, record_decision
from tests.conftest import NOW

pytestmark = pytest.mark.browser

WORDS = {
    "en": ("The library's privacy policy", "Version 2026-01, in force since May 2, 2026.",
           "See and download your data", "Your data", "Download it all as a file (JSON)",
           "Consent receipt"),
    "es": ("La política de privacidad de la biblioteca",
           "Versión 2026-01, vigente desde el 2 de mayo de 2026.", "Ver y descargar sus datos",
           "Sus datos", "Descargarlo todo como archivo (JSON)", "Recibo de consentimiento"),
}


@pytest.mark.parametrize("language", ["en", "es"])
def test_a_patron_sees_the_policy_downloads_their_data_and_a_receipt(site, page, check_page,
                                                                     csp_reports, tmp_path,
                                                                     language):
    patron = site.patron(first_name="Ana", email="ana@example.org", language=language)
    with site.app.app_context():
        db.session.add(PolicyVersion(version="2026-01", effective_at=NOW - timedelta(days=30),
                                     summary="Photos: say no at the door.", material=True,
                                     created_at=NOW))
        db.session.commit()
        record_decision(db.session, runtime.context(site.app), DecisionRequest(
            purpose="photo_video", decision=Decision.OPT_OUT, source=Source.PREFERENCE_CENTER,
            actor=Actor.PATRON, occurred_at=NOW - timedelta(days=2),
            patron=db.session.get(Patron, patron.id)), now=NOW)
        db.session.commit()
    words = WORDS[language]

    page.goto(site.link(LinkKind.PREFERENCES, patron))
    policy = page.get_by_role("region", name=words[0])
    expect(policy).to_contain_text(words[1])
    expect(policy).to_contain_text("Photos: say no at the door.")
    page.get_by_role("link", name=words[2]).click()

    expect(page.get_by_role("heading", level=1)).to_have_text(words[3])
    check_page(page, f"patron-data-{language}")
    with page.expect_download() as started:
        page.get_by_role("link", name=words[4]).click()
    saved = tmp_path / started.value.suggested_filename
    started.value.save_as(saved)
    data = json.loads(saved.read_text())
    assert saved.name == f"library-data-{patron.public_id}.json"
    assert data["patron"]["first_name"] == "Ana"
    assert [e["purpose"] for e in data["events"]] == ["photo_video"]

    with page.expect_download() as started:
        page.get_by_role("link", name=words[5]).first.click()
    receipt_file = tmp_path / started.value.suggested_filename
    started.value.save_as(receipt_file)
    receipt = json.loads(receipt_file.read_text())
    assert receipt["consentReceiptID"] == data["events"][0]["receipt_id"]
    assert receipt["piiPrincipalId"] == patron.public_id
    assert receipt["policyVersion"] == "2026-01"
    assert csp_reports == []
