"""Adding a purpose to the catalog (domain/purposes.py) must reach every page, email, export and
command: each fails here until it knows the new purpose."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
from jinja2 import Environment, FileSystemLoader

from consent_service.domain.guardians import GUARDIAN_ORDER
from consent_service.domain.purposes import PATRON_PURPOSES, PurposeKey
from consent_service.domain.tokens import LinkKind
from consent_service.mail.compose import LANGUAGES, TEMPLATE_DIR
from consent_service.services.preferences import EMAIL_ROW
from consent_service.web import guardians as guardian_pages
from consent_service.web import public as public_pages

ALL = sorted(PurposeKey)


def test_every_key_has_a_purpose_in_the_catalog_and_back(ctx):
    assert sorted(ctx.catalog.keys()) == sorted(str(key) for key in PurposeKey)


def test_the_guardian_pages_order_and_explain_every_purpose():
    assert sorted(GUARDIAN_ORDER) == ALL
    assert sorted(guardian_pages._PURPOSE_TEXT) == ALL


def test_a_persons_data_page_and_consent_receipts_name_every_purpose():
    from consent_service.domain.receipts import PII_CATEGORIES, PURPOSE_CATEGORIES
    from consent_service.web.patron_data import PURPOSE_WORDS

    assert sorted(PURPOSE_WORDS) == sorted(PURPOSE_CATEGORIES) == sorted(PII_CATEGORIES) == ALL


def test_the_preference_center_shows_and_explains_every_purpose_a_patron_decides(
        client, ctx, make_patron):
    patron = make_patron(card="21000002", email="reader@example.org")
    page = client.get(urlsplit(ctx.link(LinkKind.PREFERENCES, patron.public_id)).path)
    for purpose in PATRON_PURPOSES:
        row = EMAIL_ROW if purpose == PurposeKey.EMAIL_MARKETING else purpose
        assert f'id="row-{row}"' in page.text, purpose
        assert row in public_pages._PURPOSE_TEXT


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_guardians_emails_name_and_explain_every_purpose(language):
    words = Environment(loader=FileSystemLoader(TEMPLATE_DIR), autoescape=True).get_template(
        f"{language}/_guardian_words.txt").module
    assert sorted(words.labels) == ALL
    assert sorted(words.explanations) == ALL


@pytest.mark.parametrize("purpose", ALL)
def test_every_purpose_can_be_exported_and_is_shown_for_a_patron(runner, make_patron, tmp_path,
                                                                 purpose):
    make_patron(card="21000001", email="reader@example.org", street="1 Main St", city="Golden",
                postal_code="80401")
    exported = runner.invoke(args=["export", "contacts", "--purpose", purpose, "--output",
                                   str(tmp_path / "out.csv")])
    assert exported.exit_code == 0, exported.output
    shown = json.loads(runner.invoke(args=["patrons", "show", "21000001"]).output)
    assert purpose in {verdict["purpose"] for verdict in shown["eligibility"]}
