"""Chunks, keyset order and one row per address never change an answer: the export says what asking
the eligibility function about each patron alone says."""

from __future__ import annotations

import csv
from collections import Counter
from datetime import date, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.extensions import db
from consent_service.models import AddressSuppression, Patron, Topic, UndeliverableAddress
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.export import export_contacts
from consent_service.services.standing import load_standings
from tests.conftest import NOW

EMAIL, POSTAL = "email_marketing", "postal_marketing"
ADDRESSES = ("home@example.org", "shared@example.org", "work@example.org", "kids@example.org")
HOME = {"street": "1 Main St", "city": "Golden", "postal_code": "80401"}
TODAY = NOW.date()  # NOW is noon UTC: the same date in Colorado, where the export counts ages

patrons = st.lists(st.fixed_dictionaries({
    "email": st.one_of(st.none(), st.sampled_from(ADDRESSES)),
    "status": st.sampled_from(["active", "active", "active", "inactive"]),
    "birth_date": st.one_of(st.none(), st.dates(date(1940, 1, 1), date(2007, 12, 31)),
                            st.dates(date(2008, 1, 1), date(2025, 12, 31))),
    "postal": st.booleans(),
}), min_size=1, max_size=12)
decisions = st.lists(st.fixed_dictionaries({
    "who": st.integers(min_value=0, max_value=11),
    "purpose": st.sampled_from([EMAIL, POSTAL]),
    "topic": st.sampled_from([None, "events"]),
    "decision": st.sampled_from(list(Decision)),
    "actor": st.sampled_from([Actor.PATRON, Actor.GUARDIAN, Actor.STAFF]),
    "hours_ago": st.integers(min_value=0, max_value=24 * 400),
}), max_size=12)
address_trouble = st.lists(st.tuples(st.sampled_from(ADDRESSES),
                                     st.sampled_from(["suppressed", "undeliverable"])), max_size=3)
exports = st.sampled_from([(EMAIL, None), (EMAIL, "events"), (POSTAL, None)])


def start_empty(session):
    for table in reversed(db.metadata.sorted_tables):
        session.execute(table.delete())
    session.add(Topic(key="events", name="Events", created_at=NOW))
    session.commit()


def one_by_one(session, ctx, purpose_key, topic):
    """The expected export: each patron asked about alone; for email, the lowest eligible id at an
    address has the address's row."""
    purpose = ctx.catalog.get(purpose_key)
    rows: dict[str, str] = {}
    left_out: dict[str, tuple[str, str]] = {}  # public id -> (card number, reason)
    represented: set[str] = set()
    for patron in session.scalars(select(Patron).order_by(Patron.id)):
        verdict = load_standings(session, [patron])[patron.id].verdict(purpose, topic, TODAY)
        if not verdict.allowed:
            left_out[patron.public_id] = (patron.card_number, verdict.reason.value)
        elif purpose_key != EMAIL:
            rows[patron.public_id] = patron.email or ""
        elif patron.address_key not in represented:
            represented.add(patron.address_key)
            rows[patron.public_id] = patron.email
    return rows, left_out


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(population=patrons, decided=decisions, trouble=address_trouble, chosen=exports)
def test_export_equals_asking_about_each_patron_alone(session, ctx, tmp_path, population, decided,
                                                      trouble, chosen):
    start_empty(session)
    people = []
    for n, facts in enumerate(population):
        email = facts["email"]
        postal = HOME if facts["postal"] else {}
        people.append(Patron(card_number=f"2100{n:06d}", email=email,
                             address_key=ctx.address_key(email) if email else None,
                             birth_date=facts["birth_date"], status=facts["status"],
                             created_at=NOW, updated_at=NOW, **postal))
    session.add_all(people)
    session.flush()
    for choice in decided:
        patron = people[choice["who"] % len(people)]
        if choice["purpose"] == EMAIL and patron.address_key is None:
            continue  # an email decision needs an address
        record_decision(session, ctx, DecisionRequest(
            purpose=choice["purpose"],
            topic=choice["topic"] if choice["purpose"] == EMAIL else None,
            decision=choice["decision"], source=Source.STAFF_DESK, actor=choice["actor"],
            occurred_at=NOW - timedelta(hours=choice["hours_ago"]), patron=patron), now=NOW)
    for address, kind in dict(trouble).items():
        key = ctx.address_key(address)
        if kind == "suppressed":
            session.add(AddressSuppression(address_key=key, reason="spamreport",
                                           suppressed_at=NOW - timedelta(days=1)))
        else:
            session.add(UndeliverableAddress(address_key=key, reason="bounce",
                                             occurred_at=NOW - timedelta(days=1)))
    session.commit()
    purpose, topic = chosen
    output, excluded = tmp_path / "contacts.csv", tmp_path / "excluded.csv"

    manifest = export_contacts(session, ctx, purpose=purpose, topic=topic, output=output,
                               excluded=excluded, created_by="property", now=NOW, chunk_size=3)

    with output.open(newline="", encoding="utf-8") as handle:
        written = list(csv.DictReader(handle))
    with excluded.open(newline="", encoding="utf-8") as handle:
        written_left_out = list(csv.DictReader(handle))
    expected_rows, expected_left_out = one_by_one(session, ctx, purpose, topic)
    assert {row["patron_id"]: row["email"] for row in written} == expected_rows
    assert len(written) == manifest.row_count == len(expected_rows)
    assert {row["patron_id"]: (row["card_number"], row["reason"])
            for row in written_left_out} == expected_left_out
    assert len(written_left_out) == len(expected_left_out)
    assert manifest.excluded_counts == dict(Counter(
        reason for _, reason in expected_left_out.values()))
