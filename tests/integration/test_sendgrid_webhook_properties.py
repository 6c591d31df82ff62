"""Whatever else a signed batch holds, its good opt-outs take effect: any JSON value in any field of
the other events is rejected or applied on its own, never at the cost of the rest of the batch."""
# ruff: noqa: F811 - pytest fixtures are imported by name and then taken as arguments

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent_service.domain.ledger import Decision, resolve
from consent_service.models import WebhookBatch
from consent_service.services.sendgrid_addresses import address_state
from tests.conftest import NOW
from tests.integration.sendgrid_fixtures import (  # noqa: F401 - fixtures, used by name
    EVENTS_GROUP,
    app,
    fake_sendgrid,
    post_batch,
    sendgrid_event,
    signer,
    topics,
)

EMAIL = "email_marketing"
FIELDS = ("event", "email", "timestamp", "asm_group_id", "sg_event_id", "sg_message_id",
          "patron_id", "reason", "type")
TRICKY_TEXT = ["", " ", "\x00", "a\x00b", "\u202e", "\u00b2", "\u0661\u0662", "1_780_000_000",
               "unsubscribe", "group_unsubscribe", "bounce", "Bounced Address", "101", "-1",
               "NaN", "1e999", "x" * 300, "\r\n", "\ud7ff\ue000"]
RUN = itertools.count()  # hypothesis reuses the test's database: each example has its own names

json_values = st.recursive(
    st.none() | st.booleans()
    | st.integers() | st.integers(min_value=-(10**40), max_value=10**40)
    | st.sampled_from([0, -1, 2**31 - 1, 2**31, 2**63, 10**30, 10**400])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20) | st.text(st.characters(max_codepoint=0x9f), max_size=8)
    | st.sampled_from(TRICKY_TEXT),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6)

# An otherwise good event of each kind that acts, then some of its fields replaced or removed.
templates = st.sampled_from([
    ("unsubscribe", {}), ("group_unsubscribe", {"asm_group_id": EVENTS_GROUP}),
    ("group_resubscribe", {"asm_group_id": EVENTS_GROUP}), ("spamreport", {}),
    ("bounce", {"type": "bounce", "reason": "550 5.1.1 unknown user"}),
    ("dropped", {"reason": "Bounced Address"}), ("dropped", {"reason": "Unsubscribed Address"}),
    ("open", {}),
])
changes = st.dictionaries(st.sampled_from(FIELDS), st.one_of(st.just(...), json_values),
                          min_size=1, max_size=3)  # ... removes the field
mangled_events = st.lists(st.one_of(st.tuples(templates, changes), json_values),
                          min_size=1, max_size=4)
good_opt_outs = st.lists(st.sampled_from(["unsubscribe", "group_unsubscribe"]), min_size=1,
                         max_size=3)


def mangled(n: int, template: tuple[str, dict[str, Any]], change: dict[str, Any]) -> dict[str, Any]:
    name, fields = template
    event = sendgrid_event(name, f"other-{n}@example.org", NOW - timedelta(minutes=5),
                           sg_event_id=f"other-{n}", sg_message_id=f"msg-{n}", **fields)
    for field, value in change.items():
        if value is ...:
            event.pop(field, None)
        else:
            event[field] = value
    return event


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(good=good_opt_outs, others=mangled_events, order=st.randoms(use_true_random=False))
def test_good_opt_outs_take_effect_whatever_the_other_events_of_their_batch_hold(
        client, session, ctx, signer, topics, good, others, order):
    run = next(RUN)
    wanted = []
    events: list[Any] = []
    for n, name in enumerate(good):
        address = f"good-{run}-{n}@example.org"
        fields = {"asm_group_id": EVENTS_GROUP} if name == "group_unsubscribe" else {}
        events.append(sendgrid_event(name, address, NOW - timedelta(minutes=n + 1),
                                     sg_event_id=f"good-{run}-{n}", **fields))
        wanted.append((address, "events" if fields else None))
    for n, other in enumerate(others):
        events.append(mangled(run * 10 + n, *other) if isinstance(other, tuple) else other)
    order.shuffle(events)

    response = post_batch(client, signer, events)

    assert 200 <= response.status_code < 300
    assert response.json["processed"] is True
    for address, topic in wanted:
        in_force = resolve(address_state(session, ctx.address_key(address)), EMAIL, topic)
        assert in_force is not None and in_force.decision is Decision.OPT_OUT, address
    batch = session.get(WebhookBatch, response.json["batch"])
    assert sum(batch.counts.values()) == len(events)
    assert len(batch.rejected or []) == batch.counts["invalid"]
    session.rollback()
