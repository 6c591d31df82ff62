"""`load_standing` (one patron, one statement: the unsubscribe page and the eligibility API) gives
what `load_standings` (a batch: exports, pages of patrons) gives for the same patron."""

from __future__ import annotations

from datetime import timedelta

import pytest

from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.models import AddressSuppression, UndeliverableAddress
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.standing import load_standing, load_standings
from tests.conftest import NOW


@pytest.mark.parametrize("purposes", [None, ["email_marketing"], ["photo_video", "email_marketing"]])
def test_one_patrons_standing_is_the_batchs(session, ctx, make_patron, purposes):
    home, shared, bounced = "home@example.org", "shared@example.org", "gone@example.org"
    patrons = [make_patron(email=home), make_patron(email=shared), make_patron(email=shared),
               make_patron(email=bounced), make_patron(email=None)]
    for at, (patron, purpose, topic, decision) in enumerate([
            (patrons[0], "email_marketing", None, Decision.OPT_OUT),
            (patrons[0], "photo_video", None, Decision.OPT_OUT),
            (patrons[1], "email_marketing", None, Decision.OPT_IN),
            (patrons[2], "photo_video", None, Decision.OPT_IN),
            (patrons[4], "photo_video", None, Decision.OPT_OUT)]):
        record_decision(session, ctx, DecisionRequest(
            purpose=purpose, topic=topic, decision=decision, source=Source.STAFF_PHONE,
            actor=Actor.STAFF, occurred_at=NOW - timedelta(minutes=10 - at), patron=patron),
            now=NOW)
    session.add(AddressSuppression(address_key=ctx.address_key(shared), reason="spamreport",
                                   suppressed_at=NOW))
    session.add(UndeliverableAddress(address_key=ctx.address_key(bounced), reason="bounce",
                                     occurred_at=NOW))
    session.commit()

    batch = load_standings(session, patrons, purposes)
    for patron in patrons:
        assert load_standing(session, patron, purposes) == batch[patron.id], patron.card_number
    assert batch[patrons[1].id].address.suppressed and batch[patrons[3].id].address.undeliverable
    assert batch[patrons[0].id].patron_state and batch[patrons[2].id].address_state
