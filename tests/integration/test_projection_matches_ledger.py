"""After thousands of random decisions, the stored projections equal a fresh fold of the ledger."""

from __future__ import annotations

import random
from datetime import timedelta

from sqlalchemy import select

from consent_service.domain.ledger import Actor, Decision, Ruling, Source, fold
from consent_service.models import AddressDecision, ConsentEvent, PatronDecision, Topic
from consent_service.services.decisions import DecisionRequest, record_decision
from tests.conftest import NOW

PURPOSES = ["email_marketing", "postal_marketing", "photo_video", "third_party_modeling"]
TOPICS = [None, "events", "kids_teens"]


def _stored(session, model, subject):
    return {
        (getattr(row, subject), row.purpose, row.topic): (row.decision, row.occurred_at, row.actor)
        for row in session.scalars(select(model))
    }


def _folded(events, subject):
    folded = fold(
        ((getattr(e, subject), e.purpose, e.topic),
         Ruling(Decision(e.decision), e.occurred_at, Actor(e.actor)))
        for e in events if e.effective and getattr(e, subject) is not None
    )
    return {k: (r.decision.value, r.occurred_at, r.actor.value) for k, r in folded.items()}


def test_projection_equals_a_fresh_fold_after_random_operations(session, ctx, make_patron):
    rnd = random.Random(20261129)
    session.add_all([Topic(key=k, name=k, created_at=NOW) for k in TOPICS if k])
    session.commit()
    addresses = [f"household{n}@example.org" for n in range(6)]
    patrons = [
        make_patron(email=rnd.choice([*addresses, None]),
                    birth_date=rnd.choice([None, NOW.date().replace(year=1970),
                                           NOW.date().replace(year=2017)]))
        for _ in range(12)
    ]
    written = 0
    for step in range(2500):
        patron = rnd.choice(patrons)
        purpose = rnd.choice(PURPOSES)
        if purpose == "email_marketing" and patron.email is None:
            purpose = "photo_video"
        topic = rnd.choice(TOPICS) if purpose == "email_marketing" else None
        result = record_decision(session, ctx, DecisionRequest(
            purpose=purpose, topic=topic, decision=rnd.choice(list(Decision)),
            source=Source.IMPORT, actor=rnd.choice(list(Actor)),
            occurred_at=NOW - timedelta(minutes=rnd.randint(0, 600)), patron=patron), now=NOW)
        written += result.written
        if step % 50 == 0:
            session.commit()
    session.commit()

    events = list(session.scalars(select(ConsentEvent)))
    assert len(events) == written > 1000
    assert _stored(session, PatronDecision, "patron_id") == _folded(events, "patron_id")
    assert _stored(session, AddressDecision, "address_key") == _folded(events, "address_key")
