"""Sixteen threads doing opposite things to the same patrons and addresses at once, on PostgreSQL:
one-click unsubscribes over HTTP, resubscribes on the preference center, SendGrid webhook batches
(late, duplicated, opposite), and staff entries. Afterwards the ledger folds to the projections, every
address whose email decisions changed is waiting in the outbox exactly once, and nothing failed."""

from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.domain.tokens import LinkKind
from consent_service.extensions import db
from consent_service.models import (
    AddressDecision,
    ConsentEvent,
    Patron,
    PatronDecision,
    SuppressionSyncJob,
    WebhookBatch,
)
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.sendgrid_webhook import process_stored_batches
from tests.conftest import NOW
from tests.integration.sendgrid_fixtures import (  # noqa: F401 - fixtures used by name
    EVENTS_GROUP,
    app,
    fake_sendgrid,
    post_batch,
    sendgrid_event,
    signer,
    topics,
)
from tests.integration.test_projection_matches_ledger import _folded, _stored

pytestmark = pytest.mark.postgresql_only

THREADS = 16
ROUNDS = 10


def test_sixteen_threads_doing_opposite_things_leave_ledger_projection_and_outbox_agreeing(
        app, session, ctx, topics, signer, make_patron):  # noqa: F811 - the fixtures above
    households = [f"home{n}@example.org" for n in range(3)]
    people = [make_patron(email=households[n % 3]) for n in range(6)]
    targets = [(p.id, p.public_id, p.email) for p in people]
    start = threading.Barrier(THREADS, timeout=60)
    errors: list[BaseException] = []
    statuses: Counter[tuple[str, int]] = Counter()

    def decide(patron_id: int, decision: Decision, source: Source, actor: Actor, at) -> None:
        with app.app_context():
            patron = db.session.get(Patron, patron_id)
            record_decision(db.session, ctx, DecisionRequest(
                purpose="email_marketing", topic="events", decision=decision, source=source,
                actor=actor, occurred_at=at, patron=patron), now=NOW)
            db.session.commit()
            db.session.remove()

    def work(number: int) -> None:
        rnd = random.Random(number)
        client = app.test_client()
        try:
            start.wait()
            for step in range(ROUNDS):
                patron_id, public_id, email = rnd.choice(targets)
                at = NOW - timedelta(seconds=rnd.randint(0, 3600))
                kind = (number + step) % 4
                if kind == 0:  # RFC 8058 one-click, as a mail client posts it
                    path = urlsplit(ctx.link(LinkKind.UNSUBSCRIBE, public_id, "events")).path
                    answer = client.post(path, data={"List-Unsubscribe": "One-Click"})
                    statuses[("one_click", answer.status_code)] += 1
                elif kind == 1:  # the patron resubscribes on the preference center
                    decide(patron_id, Decision.OPT_IN, Source.PREFERENCE_CENTER, Actor.PATRON, at)
                    statuses[("preferences", 200)] += 1
                elif kind == 2:  # SendGrid: opposite events, one repeated, some late
                    events = [
                        sendgrid_event("group_unsubscribe", email, at, asm_group_id=EVENTS_GROUP,
                                       sg_event_id=f"u-{number}-{step}"),
                        sendgrid_event("group_resubscribe", email, at - timedelta(minutes=5),
                                       asm_group_id=EVENTS_GROUP, sg_event_id=f"r-{number}-{step}"),
                    ]
                    answer = post_batch(client, signer, [*events, events[0]])
                    statuses[("webhook", answer.status_code)] += 1
                else:  # staff record what the patron said on the phone
                    decide(patron_id, rnd.choice(list(Decision)), Source.STAFF_PHONE, Actor.STAFF,
                           at)
                    statuses[("staff", 200)] += 1
        except BaseException as error:  # surfaced in the test's thread
            errors.append(error)
            start.abort()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert {status for (_, status) in statuses} == {200}, statuses
    assert sum(statuses.values()) == THREADS * ROUNDS
    # a batch whose processing lost a race waits for the worker: let it finish them
    process_stored_batches(session, ctx, now=NOW)
    session.expire_all()
    assert {batch.status for batch in session.scalars(select(WebhookBatch))} == {"processed"}

    events = session.scalars(select(ConsentEvent).order_by(ConsentEvent.id)).all()
    assert len({e.sg_event_id for e in events if e.sg_event_id}) == len(
        [e for e in events if e.sg_event_id]), "a repeated SendGrid event was recorded twice"
    for model, subject in ((PatronDecision, "patron_id"), (AddressDecision, "address_key")):
        assert _stored(session, model, subject) == _folded(events, subject), model.__name__

    pending = Counter(session.scalars(select(SuppressionSyncJob.address_key).where(
        SuppressionSyncJob.status == "pending")))
    decided = set(session.scalars(select(AddressDecision.address_key)))
    assert set(pending) == decided, "every changed address waits in the outbox"
    assert max(pending.values()) == 1, f"an address queued twice: {pending}"

