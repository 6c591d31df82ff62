"""However SendGrid orders, splits, repeats and re-labels its deliveries, the ledger ends in the
state that delivering each event once, in time order, gives."""
# ruff: noqa: F811 - pytest fixtures are imported by name and then taken as arguments

from __future__ import annotations

import itertools
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from consent_service.extensions import db
from consent_service.models import (
    AddressDecision,
    AddressSuppression,
    Patron,
    PatronDecision,
    Topic,
    UndeliverableAddress,
)
from tests.conftest import NOW
from tests.integration.sendgrid_fixtures import (  # noqa: F401 - fixtures, used by name
    EVENTS_GROUP,
    app,
    fake_sendgrid,
    post_batch,
    sendgrid_event,
    signer,
)

NAMED, SHARED = "named@example.org", "unknown@example.org"
READER_ID = "p_reader_fixed_id"
KINDS = {
    "unsubscribe": {},
    "group_unsubscribe": {"asm_group_id": EVENTS_GROUP},
    "group_resubscribe": {"asm_group_id": EVENTS_GROUP},
    "spamreport": {},
    "bounce": {"type": "bounce", "reason": "550 5.1.1 unknown user"},
    "dropped": {"reason": "Unsubscribed Address"},
}

pool_events = st.lists(st.fixed_dictionaries({
    "kind": st.sampled_from(sorted(KINDS)),
    "email": st.sampled_from([NAMED, SHARED]),
    "minutes_ago": st.integers(min_value=1, max_value=4),  # few instants: ties happen
    "named": st.booleans(),
    "message": st.booleans(),
}), min_size=1, max_size=8)


@st.composite
def deliveries(draw, size: int) -> list[list[tuple[int, int]]]:
    """Batches of (event index, retry number): every event at least once, some again (as a retry,
    maybe under a new sg_event_id), batches of any split, in any order."""
    sends = [(index, 0) for index in range(size)]
    for index in draw(st.lists(st.integers(0, size - 1), max_size=size * 2)):
        sends.append((index, draw(st.integers(0, 2))))
    sends = draw(st.permutations(sends))
    cuts = sorted(draw(st.sets(st.integers(1, max(len(sends) - 1, 1)), max_size=4)))
    bounds = [0, *[cut for cut in cuts if cut < len(sends)], len(sends)]
    return [sends[start:end] for start, end in itertools.pairwise(bounds) if start < end]


def as_sent(spec: dict, index: int, retry: int) -> dict:
    fields = dict(KINDS[spec["kind"]])
    if spec["named"] and spec["email"] == NAMED:
        fields["patron_id"] = READER_ID
    if spec["message"]:
        fields["sg_message_id"] = f"msg-{index}.filter0001"
    if retry < 2:  # the third kind of retry comes without an sg_event_id at all
        fields["sg_event_id"] = f"ev-{index}" + (f"-retry{retry}" if retry else "")
    at = NOW - timedelta(minutes=spec["minutes_ago"])
    return sendgrid_event(spec["kind"], spec["email"], at, **fields)


def distinct(specs: list[dict]) -> list[dict]:
    """SendGrid's events are distinct in content (address, event, time, message, group)."""
    seen, kept = set(), []
    for index, spec in enumerate(specs):
        key = (spec["email"], spec["kind"], spec["minutes_ago"], index if spec["message"] else None)
        if key not in seen:
            seen.add(key)
            kept.append(spec)
    return kept


def start_empty(session) -> None:
    for table in reversed(db.metadata.sorted_tables):
        session.execute(table.delete())
    session.add(Topic(key="events", name="Events", sendgrid_group_id=EVENTS_GROUP, created_at=NOW))
    session.add(Patron(card_number="21000001", public_id=READER_ID, email=NAMED,
                       address_key=None, created_at=NOW, updated_at=NOW))
    session.commit()


def state(session) -> tuple:
    session.expire_all()
    cards = {p.id: p.card_number for p in session.scalars(select(Patron))}
    return (
        sorted((r.address_key, r.topic, r.decision, r.occurred_at)
               for r in session.scalars(select(AddressDecision))),
        sorted((cards[r.patron_id], r.topic, r.decision, r.occurred_at)
               for r in session.scalars(select(PatronDecision))),
        sorted((r.address_key, r.reason, r.suppressed_at, r.lifted_at is None)
               for r in session.scalars(select(AddressSuppression))),
        sorted((r.address_key, r.reason, r.occurred_at)
               for r in session.scalars(select(UndeliverableAddress))),
    )


def run(client, session, ctx, signer, specs, batches) -> tuple:
    start_empty(session)
    reader = session.scalar(select(Patron))
    reader.address_key = ctx.address_key(NAMED)
    session.commit()
    for batch in batches:
        response = post_batch(client, signer, [as_sent(specs[i], i, retry) for i, retry in batch])
        assert response.status_code == 200 and response.json["processed"]
    return state(session)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data(), drawn=pool_events)
def test_any_order_of_deliveries_gives_the_same_state(client, session, ctx, signer, data, drawn):
    specs = distinct(drawn)
    in_time_order = sorted(range(len(specs)), key=lambda i: -specs[i]["minutes_ago"])
    expected = run(client, session, ctx, signer, specs, [[(i, 0)] for i in in_time_order])

    shuffled = data.draw(deliveries(len(specs)))

    assert run(client, session, ctx, signer, specs, shuffled) == expected
