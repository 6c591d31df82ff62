"""An address stored before address validation refused its local part still takes SendGrid's
opt-outs: the rule keeps such addresses out, it must not lose their unsubscribes."""

# ruff: noqa: F811 - pytest fixtures are imported by name and then taken as arguments

from __future__ import annotations

from datetime import timedelta

import pytest

from consent_service.domain.addresses import InvalidEmailError, normalize_email
from consent_service.domain.eligibility import Reason
from consent_service.services.standing import load_standings
from tests.conftest import NOW
from tests.integration.sendgrid_fixtures import (  # noqa: F401 - fixtures, used by name
    app,
    fake_sendgrid,
    post_batch,
    sendgrid_event,
    signer,
)

LEGACY = "a&b@example.org"


def test_a_sendgrid_unsubscribe_for_a_legacy_address_opts_it_out(
        app, client, session, ctx, make_patron, signer):
    with pytest.raises(InvalidEmailError):  # refused where addresses enter
        normalize_email(LEGACY)
    patron = make_patron(email=LEGACY)  # stored as an earlier import accepted it

    response = post_batch(client, signer, [sendgrid_event(
        "unsubscribe", LEGACY, NOW - timedelta(minutes=5), sg_event_id="ev-legacy")])

    assert response.status_code == 200
    assert response.json["processed"] is True
    session.expire_all()
    verdict = load_standings(session, [patron])[patron.id].verdict(
        ctx.catalog.get("email_marketing"), None, NOW.date())
    assert verdict.reason is Reason.OPTED_OUT
