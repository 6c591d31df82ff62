"""The set-based paths give exactly what the per-event rules give: `record_decisions` equals
`record_decision` called for each request in turn, and a webhook batch applied together equals
the same batch applied one event at a time."""
# ruff: noqa: F811 - pytest fixtures are imported by name and then taken as arguments

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.extensions import db
from consent_service.models import (
    AddressDecision,
    AddressSuppression,
    ConsentEvent,
    LedgerChainHead,
    Patron,
    PatronDecision,
    PolicyVersion,
    SendGridEventReceipt,
    SuppressionSyncJob,
    Topic,
    UndeliverableAddress,
    WebhookBatch,
)
from consent_service.services import sendgrid_webhook
from consent_service.services.decisions import DecisionRequest, record_decision, record_decisions
from tests.conftest import NOW
from tests.integration.sendgrid_fixtures import (  # noqa: F401 - fixtures, used by name
    EVENTS_GROUP,
    NEWS_GROUP,
    UNMAPPED_GROUP,
    app,
    fake_sendgrid,
    post_batch,
    sendgrid_event,
    signer,
)

SHARED, CHILD, OTHER = "family@example.org", "kid@example.org", "other@example.org"
# card -> (email, birth date): two adults sharing an address, a child under 13, one without email
PATRONS = {
    "21000001": (SHARED, date(1980, 5, 17)),
    "21000002": (SHARED, date(1975, 1, 2)),
    "21000003": (CHILD, date(2019, 3, 4)),
    "21000004": (None, date(1990, 7, 8)),
}
PURPOSES = [("email_marketing", None), ("email_marketing", "events"),
            ("email_marketing", "news"), ("postal_marketing", None), ("photo_video", None)]


def start_empty(session, ctx) -> dict[str, Patron]:
    """An empty database with two topics, two policy versions, the patrons, and a spam report on the
    shared address (so an opt-in can lift it)."""
    for table in reversed(db.metadata.sorted_tables):
        session.execute(table.delete())
    session.commit()
    session.expunge_all()
    session.add(Topic(key="events", name="Events", sendgrid_group_id=EVENTS_GROUP, created_at=NOW))
    session.add(Topic(key="news", name="News", sendgrid_group_id=NEWS_GROUP, created_at=NOW))
    for version, minutes in (("2026-1", 600), ("2026-2", 3)):
        session.add(PolicyVersion(version=version, effective_at=NOW - timedelta(minutes=minutes),
                                  created_at=NOW))
    patrons = {}
    for card, (email, born) in PATRONS.items():
        patrons[card] = Patron(card_number=card, public_id=f"p_{card}", email=email,
                               address_key=ctx.address_key(email) if email else None,
                               birth_date=born, created_at=NOW, updated_at=NOW)
        session.add(patrons[card])
    session.add(AddressSuppression(address_key=ctx.address_key(SHARED), reason="spam_report",
                                   suppressed_at=NOW - timedelta(minutes=5)))
    session.commit()
    return patrons


def ledger_state(session) -> tuple:
    """Everything the rules decide, without database ids, hashes or salts."""
    session.expire_all()
    cards = {p.id: p.card_number for p in session.scalars(select(Patron))}
    versions = {v.id: v.version for v in session.scalars(select(PolicyVersion))}
    chains = {f"p:{id_}": f"p:{card}" for id_, card in cards.items()}  # ids differ between runs
    events = {e.id: (cards.get(e.patron_id), e.address_key, e.purpose, e.topic, e.decision,
                     e.source, e.actor, e.occurred_at, e.effective, e.sg_event_id,
                     versions.get(e.policy_version_id), chains.get(e.chain_key, e.chain_key),
                     e.chain_seq)
              for e in session.scalars(select(ConsentEvent))}
    return (
        sorted(events.values(), key=repr),
        sorted((cards[r.patron_id], r.purpose, r.topic, r.decision, r.actor, r.occurred_at,
                events[r.event_id]) for r in session.scalars(select(PatronDecision))),
        sorted((r.address_key, r.purpose, r.topic, r.decision, r.actor, r.occurred_at,
                events[r.event_id]) for r in session.scalars(select(AddressDecision))),
        sorted((r.address_key, r.reason, r.suppressed_at, r.lifted_at,
                events.get(r.lifted_by_event_id)) for r in session.scalars(select(AddressSuppression))),
        sorted((r.address_key, r.reason, r.occurred_at)
               for r in session.scalars(select(UndeliverableAddress))),
        sorted((r.address_key, r.email, r.status) for r in session.scalars(select(SuppressionSyncJob))),
    )


requests_drawn = st.lists(st.fixed_dictionaries({
    "card": st.sampled_from([*PATRONS, None]),  # None: SendGrid about an address, no patron
    "purpose": st.sampled_from(PURPOSES),
    "decision": st.sampled_from(list(Decision)),
    "actor": st.sampled_from(list(Actor)),
    "minutes_ago": st.integers(min_value=1, max_value=5),  # few instants: ties happen
    "sg_event_id": st.sampled_from([None, None, "ev-1", "ev-2"]),
}), min_size=1, max_size=10)


def as_requests(drawn: list[dict], patrons: dict[str, Patron]) -> list[DecisionRequest]:
    made = []
    for spec in drawn:
        purpose, topic = spec["purpose"]
        patron = patrons[spec["card"]] if spec["card"] else None
        if patron is None and purpose != "email_marketing":
            continue  # refused by both: a decision needs a subject
        if patron is not None and not patron.email and purpose == "email_marketing":
            continue
        made.append(DecisionRequest(
            purpose=purpose, topic=topic, decision=spec["decision"], source=Source.API,
            actor=spec["actor"], occurred_at=NOW - timedelta(minutes=spec["minutes_ago"]),
            patron=patron, email=OTHER if patron is None else None,
            evidence={"note": "property"}, sg_event_id=spec["sg_event_id"]))
    return made


def outcomes(results) -> list[tuple]:
    return [(r.written, r.patron_changed, r.address_changed) for r in results]


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(first=requests_drawn, second=requests_drawn)
def test_record_decisions_equals_record_decision_for_each_in_turn(session, ctx, first, second):
    patrons = start_empty(session, ctx)
    for request in as_requests(first, patrons):
        record_decision(session, ctx, request, now=NOW)
    one_by_one = outcomes(record_decision(session, ctx, request, now=NOW)
                          for request in as_requests(second, patrons))
    session.commit()
    expected = ledger_state(session)

    patrons = start_empty(session, ctx)
    record_decisions(session, ctx, as_requests(first, patrons), now=NOW)
    together = outcomes(record_decisions(session, ctx, as_requests(second, patrons), now=NOW))
    session.commit()

    assert together == one_by_one
    assert ledger_state(session) == expected


KINDS = {
    "unsubscribe": {},
    "group_unsubscribe": {"asm_group_id": EVENTS_GROUP},
    "group_resubscribe": {"asm_group_id": EVENTS_GROUP},
    "group_resubscribe_news": {"asm_group_id": NEWS_GROUP},
    "group_unsubscribe_unmapped": {"asm_group_id": UNMAPPED_GROUP},
    "spamreport": {},
    "bounce": {"type": "bounce", "reason": "550 5.1.1 unknown user"},
    "dropped": {"reason": "Unsubscribed Address"},
    "dropped_bounced": {"reason": "Bounced Address"},
    "open": {},
}
batch_events = st.lists(st.fixed_dictionaries({
    "kind": st.sampled_from(sorted(KINDS)),
    "email": st.sampled_from([SHARED, CHILD, OTHER]),
    "minutes_ago": st.integers(min_value=1, max_value=5),
    "named": st.sampled_from([None, "21000001", "21000003"]),
    "sg_event_id": st.integers(min_value=0, max_value=12),  # repeats: SendGrid's retries
}), min_size=1, max_size=14)


def test_rows_written_as_table_rows_are_what_the_session_then_shows(session, ctx):
    # Events, projection rows and chain heads are written as table rows, not through the session:
    # what the session held of them must not be served stale afterwards.
    adult = start_empty(session, ctx)["21000001"]

    def decide(decision, minutes_ago):
        return record_decision(session, ctx, DecisionRequest(
            purpose="email_marketing", decision=decision, source=Source.API, actor=Actor.PATRON,
            occurred_at=NOW - timedelta(minutes=minutes_ago), patron=adult), now=NOW).event

    first = decide(Decision.OPT_OUT, 2)
    row = session.get(PatronDecision, (adult.id, "email_marketing", ""))
    shared = session.get(AddressDecision, (adult.address_key, "email_marketing", ""))
    head = session.get(LedgerChainHead, first.chain_key)
    assert (row.decision, shared.decision, head.length) == ("opt_out", "opt_out", 1)

    second = decide(Decision.OPT_IN, 1)

    assert (row.decision, row.event_id) == ("opt_in", second.id)
    assert (shared.decision, shared.event_id) == ("opt_in", second.id)
    assert (head.length, head.last_hash) == (2, second.hash)
    assert session.get(ConsentEvent, second.id) is second, "the event is the session's own"
    assert session.get(AddressSuppression, adult.address_key).lifted_by_event_id == second.id
    session.commit()
    session.expire_all()
    stored = session.get(ConsentEvent, second.id)
    assert (stored.prev_hash, stored.chain_seq, stored.decision) == (first.hash, 2, "opt_in")


def as_sent(spec: dict) -> dict:
    fields = dict(KINDS[spec["kind"]])
    if spec["named"]:
        fields["patron_id"] = f"p_{spec['named']}"
    name = spec["kind"].split("_news")[0].split("_unmapped")[0].split("_bounced")[0]
    return sendgrid_event(name, spec["email"], NOW - timedelta(minutes=spec["minutes_ago"]),
                          sg_event_id=f"ev-{spec['sg_event_id']}", **fields)


def webhook_state(session) -> tuple:
    batches = [(b.counts, b.rejected, b.status) for b in session.scalars(
        select(WebhookBatch).order_by(WebhookBatch.id))]
    receipts = sorted((r.content_hash, r.sg_event_id, r.outcome)
                      for r in session.scalars(select(SendGridEventReceipt)))
    return ledger_state(session), batches, receipts


def run_batches(client, session, ctx, signer, batches) -> tuple:
    start_empty(session, ctx)
    for batch in batches:
        response = post_batch(client, signer, [as_sent(spec) for spec in batch])
        assert response.status_code == 200 and response.json["processed"]
    return webhook_state(session)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(earlier=batch_events, batch=batch_events)
# Where order decides: the spam report is lifted by the opt-in recorded before it (the later one
# in time), and the earlier-in-time opt-in that arrives after it finds it lifted already.
@example(earlier=[], batch=[
    {"kind": "group_resubscribe", "email": SHARED, "minutes_ago": 1, "named": None,
     "sg_event_id": 1},
    {"kind": "spamreport", "email": SHARED, "minutes_ago": 4, "named": None, "sg_event_id": 2},
    {"kind": "group_resubscribe_news", "email": SHARED, "minutes_ago": 2, "named": None,
     "sg_event_id": 3}])
def test_a_batch_applied_together_equals_it_applied_one_event_at_a_time(
        client, session, ctx, signer, monkeypatch, earlier, batch):
    together = run_batches(client, session, ctx, signer, [earlier, batch])
    with monkeypatch.context() as one_by_one:
        one_by_one.setattr(sendgrid_webhook, "_partition", lambda items: ([], items))
        expected = run_batches(client, session, ctx, signer, [earlier, batch])

    assert together == expected
