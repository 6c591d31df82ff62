"""Any sequence of vendor exports and decisions (late, repeated, at the same instant, by a child or a
guardian): each export records exactly the patrons in its file, and its withdrawn-since list is
what a brute-force reading of the ledger says."""

from __future__ import annotations

import csv
from datetime import date, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from consent_service.domain.ledger import Actor, Decision, Ruling, Source
from consent_service.domain.purposes import VENDOR_PURPOSES
from consent_service.extensions import db
from consent_service.models import ConsentEvent, ExportedPatron, Patron
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.disclosures import withdrawn_since
from consent_service.services.export import export_contacts
from tests.conftest import NOW

people = st.lists(st.fixed_dictionaries({
    "birth_date": st.sampled_from([None, date(1980, 5, 17), date(2018, 3, 1)]),  # a child of 8
    "status": st.sampled_from(["active", "active", "active", "inactive"]),
}), min_size=1, max_size=5)
decide = st.fixed_dictionaries({
    "step": st.just("decide"),
    "who": st.integers(min_value=0, max_value=4),
    "purpose": st.sampled_from(VENDOR_PURPOSES),
    "decision": st.sampled_from(list(Decision)),
    "actor": st.sampled_from([Actor.PATRON, Actor.GUARDIAN, Actor.STAFF]),
    "hours_back": st.sampled_from([0, 0, 1, 2, 30]),  # when it happened, before it is recorded
    "advance": st.sampled_from([0, 0, 1, 2]),  # hours the clock moves first
})
export = st.fixed_dictionaries({
    "step": st.just("export"),
    "purpose": st.sampled_from(VENDOR_PURPOSES),
    "advance": st.sampled_from([0, 1]),
    "chunk_size": st.integers(min_value=1, max_value=3),
})
steps = st.lists(st.one_of(decide, export), min_size=1, max_size=14)


def start_empty(session):
    for table in reversed(db.metadata.sorted_tables):
        session.execute(table.delete())
    session.commit()


def precedence(event):
    return Ruling(Decision(event.decision), event.occurred_at, Actor(event.actor)).precedence()


def brute_force(ledger, patrons, purpose, known_up_to):
    """Who the export should list, read from the whole ledger: a patron in the file whose
    effective opt-out, unknown when the file was made (a later event id), beats every decision
    known then; with the first such opt-out, and the opt-in in force now, if any."""
    expected = set()
    for patron in patrons:
        mine = [e for e in ledger
                if e.patron_id == patron.id and e.purpose == purpose and e.effective]
        known = [e for e in mine if e.id <= known_up_to]
        relied_on = max(known, key=precedence, default=None)
        withdrew = [e for e in mine if e.id > known_up_to and e.decision == "opt_out"
                    and (relied_on is None or precedence(e) > precedence(relied_on))]
        if not withdrew:
            continue
        first = min(withdrew, key=lambda e: (e.occurred_at, e.id))
        now = max(mine, key=precedence)
        expected.add((patron.public_id, patron.card_number, first.occurred_at, first.source,
                      now.occurred_at if now.decision == "opt_in" else None))
    return expected


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(population=people, sequence=steps)
def test_withdrawn_since_equals_a_brute_force_reading_of_the_ledger(session, ctx, tmp_path,
                                                                    population, sequence):
    start_empty(session)
    patrons = [Patron(card_number=f"P{n}", email=None, birth_date=facts["birth_date"],
                      status=facts["status"], created_at=NOW, updated_at=NOW)
               for n, facts in enumerate(population)]
    session.add_all(patrons)
    session.commit()
    clock = NOW
    made = []  # (manifest, purpose, public ids in its file, the last event id it could know)
    for step in sequence:
        clock += timedelta(hours=step["advance"])
        if step["step"] == "decide":
            record_decision(session, ctx, DecisionRequest(
                purpose=step["purpose"], decision=step["decision"], source=Source.STAFF_PHONE,
                actor=step["actor"], occurred_at=clock - timedelta(hours=step["hours_back"]),
                patron=patrons[step["who"] % len(patrons)]), now=clock)
            session.commit()
            continue
        output = tmp_path / f"export-{len(made)}.csv"
        manifest = export_contacts(session, ctx, purpose=step["purpose"], topic=None,
                                   output=output, excluded=None, created_by="property",
                                   now=clock, chunk_size=step["chunk_size"])
        with output.open(newline="", encoding="utf-8") as handle:
            in_file = {row["patron_id"] for row in csv.DictReader(handle)}
        known_up_to = session.scalar(select(db.func.max(ConsentEvent.id))) or 0
        made.append((manifest.id, step["purpose"], in_file, known_up_to))

    ledger = list(session.scalars(select(ConsentEvent).order_by(ConsentEvent.id)))
    for export_id, purpose, in_file, known_up_to in made:
        recorded = set(session.scalars(
            select(Patron.public_id).join(ExportedPatron, ExportedPatron.patron_id == Patron.id)
            .where(ExportedPatron.export_id == export_id)))
        assert recorded == in_file
        listed = {(w.patron_id, w.card_number, w.withdrawn_at, w.source, w.consents_again_since)
                  for w in withdrawn_since(session, export_id).withdrawals}
        exported = [p for p in patrons if p.public_id in in_file]
        assert listed == brute_force(ledger, exported, purpose, known_up_to)
