"""The eligibility rules in SQL (`standing.verdict_query`, what an export reads) say what the one
eligibility function says about each patron alone: the same reason, and for an eligible patron the
same decision in force."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from consent_service.domain import ConsentServiceError
from consent_service.domain.eligibility import evaluate
from consent_service.domain.ledger import Actor, Decision, Source, resolve
from consent_service.domain.purposes import Basis, Catalog, Channel
from consent_service.models import AddressSuppression, Patron, UndeliverableAddress
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.standing import load_standings, patron_facts, verdict_query
from tests.integration.test_export_properties import start_empty

ADDRESSES = ("home@example.org", "shared@example.org", "work@example.org")
INSTANTS = [datetime(2026, 1, 1, 12, tzinfo=UTC) + timedelta(hours=h) for h in (0, 0, 0, 24)]
DAYS = [date(2026, 6, 1), date(2028, 2, 29), date(2027, 2, 28), date(2027, 3, 1)]
PURPOSES = [purpose.key for purpose in Catalog()]
EMAIL = "email_marketing"
MOSTLY_EMAIL = [EMAIL] * len(PURPOSES) + PURPOSES  # where most of the rules are


def birth_dates(today: date) -> st.SearchStrategy[date | None]:
    """No date, any date, and the days around a 13th and a 17th birthday on `today`."""
    around = []
    for age in (13, 17):
        year = today.year - age
        day = today.day if (today.month, today.day) != (2, 29) else 28
        for shift in (-1, 0, 1):
            around.append(date(year, today.month, day) + timedelta(days=shift))
    return st.one_of(st.none(), st.sampled_from(around), st.dates(date(1950, 1, 1), today),
                     st.just(date(2016, 2, 29)))


@st.composite
def libraries(draw):
    today = draw(st.sampled_from(DAYS))
    people = draw(st.lists(st.fixed_dictionaries({
        "email": st.one_of(st.none(), st.just(""), st.sampled_from(ADDRESSES)),
        "keyless": st.booleans(),  # an address stored without its key (before keys existed)
        "status": st.sampled_from(["active", "active", "inactive"]),
        "birth_date": birth_dates(today),
        "street": st.sampled_from(["1 Main St", "1 Main St", ""]),
        "city": st.sampled_from(["Golden", "Golden", None]),
    }), min_size=1, max_size=8))
    decided = draw(st.lists(st.fixed_dictionaries({
        "who": st.integers(min_value=0, max_value=7),
        "purpose": st.sampled_from(MOSTLY_EMAIL),
        "topic": st.sampled_from([None, "events"]),
        "decision": st.sampled_from(list(Decision)),
        "actor": st.sampled_from([Actor.PATRON, Actor.GUARDIAN, Actor.STAFF]),
        "at": st.sampled_from(INSTANTS),  # few instants: ties of precedence happen
    }), max_size=14))
    trouble = draw(st.lists(st.tuples(st.sampled_from(ADDRESSES),
                                      st.sampled_from(["suppressed", "lifted", "undeliverable"])),
                            max_size=3))
    asked = draw(st.sampled_from(MOSTLY_EMAIL))
    return today, people, decided, trouble, asked, draw(st.sampled_from([None, "events"])), \
        draw(st.booleans())


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(library=libraries())
def test_the_sql_verdict_is_the_eligibility_functions(session, ctx, library):
    today, people, decided, trouble, asked, topic, opt_in_basis = library
    start_empty(session)
    patrons = []
    for n, facts in enumerate(people):
        email = facts["email"]
        patrons.append(Patron(
            card_number=f"3100{n:06d}", email=email, status=facts["status"],
            address_key=ctx.address_key(email) if email and not facts["keyless"] else None,
            birth_date=facts["birth_date"], street=facts["street"], city=facts["city"],
            postal_code="80401", created_at=INSTANTS[0], updated_at=INSTANTS[0]))
    session.add_all(patrons)
    session.flush()
    for choice in decided:
        patron = patrons[choice["who"] % len(patrons)]
        email_purpose = ctx.catalog.get(choice["purpose"]).channel is Channel.EMAIL
        try:
            with session.begin_nested():
                record_decision(session, ctx, DecisionRequest(
                    purpose=choice["purpose"], topic=choice["topic"] if email_purpose else None,
                    decision=choice["decision"], source=Source.STAFF_DESK, actor=choice["actor"],
                    occurred_at=choice["at"], patron=patron), now=INSTANTS[-1])
        except ConsentServiceError:
            pass  # a decision the ledger refuses (no address for an email decision...)
    for address, kind in dict(trouble).items():
        key = ctx.address_key(address)
        if kind == "undeliverable":
            session.add(UndeliverableAddress(address_key=key, reason="bounce",
                                             occurred_at=INSTANTS[0]))
        else:
            session.add(AddressSuppression(
                address_key=key, reason="spamreport", suppressed_at=INSTANTS[0],
                lifted_at=INSTANTS[1] if kind == "lifted" else None))
    session.commit()
    purpose = ctx.catalog.get(asked)
    if opt_in_basis and purpose.basis is Basis.OPT_OUT:
        purpose = dataclasses.replace(purpose, basis=Basis.OPT_IN)
    topic = topic if purpose.has_topics else None
    by_email = purpose.channel is Channel.EMAIL

    in_sql = {patron_id: (reason, event_id) for patron_id, reason, event_id in session.execute(
        verdict_query(purpose, topic, today, [Patron.id]))}

    everyone = list(session.scalars(select(Patron)))
    standings = load_standings(session, everyone)
    expected = {}
    for patron in everyone:
        standing = standings[patron.id]
        facts = standing.facts
        if by_email and patron.address_key is None:  # the export's rule: no key, no email
            facts = patron_facts(patron.status, patron.birth_date, None, patron.street,
                                 patron.city, patron.postal_code)
        verdict = evaluate(purpose, topic, facts, standing.patron_state, standing.address_state,
                           standing.address, today)
        if verdict.reason is not None:
            expected[patron.id] = (verdict.reason.value, in_sql[patron.id][1])  # not read
        else:
            in_force = resolve(standing.address_state if by_email else standing.patron_state,
                               purpose.key, topic)
            expected[patron.id] = (None, int(in_force.event_ref) if in_force else None)
    assert in_sql == expected


def test_at_equal_precedence_the_whole_purposes_decision_is_in_force(session, ctx):
    """`resolve`: a topic's decision replaces the whole purpose's only when strictly later (or
    an opt-out, or a higher actor, at the same instant); at a tie the whole purpose's stays."""
    start_empty(session)
    patron = Patron(card_number="3200000001", email=ADDRESSES[0],
                    address_key=ctx.address_key(ADDRESSES[0]), created_at=INSTANTS[0],
                    updated_at=INSTANTS[0])
    session.add(patron)
    session.flush()
    recorded = [record_decision(session, ctx, DecisionRequest(
        purpose=EMAIL, topic=topic, decision=Decision.OPT_IN, source=Source.STAFF_DESK,
        actor=Actor.PATRON, occurred_at=INSTANTS[0], patron=patron), now=INSTANTS[-1]).event.id
        for topic in (None, "events")]
    session.commit()

    (_, reason, event_id), = session.execute(verdict_query(
        ctx.catalog.get(EMAIL), "events", DAYS[0], [Patron.id]))

    assert (reason, event_id) == (None, recorded[0])
    standing = load_standings(session, [patron])[patron.id]
    assert int(resolve(standing.address_state, EMAIL, "events").event_ref) == recorded[0]
