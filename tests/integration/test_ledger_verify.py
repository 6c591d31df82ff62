"""`ledger verify` on the hash-chained ledger: it passes on an untouched ledger and catches an edited,
a removed and a reordered event (raw SQL, as someone with database access would do it), on SQLite and
on PostgreSQL (CONSENT_TEST_DATABASE_URL)."""

from __future__ import annotations

import threading
from datetime import timedelta
from itertools import pairwise

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from consent_service.domain.evidence import link_evidence
from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.extensions import db
from consent_service.models import ConsentEvent, Patron, PatronDecision
from consent_service.services.decisions import DecisionRequest, record_decision
from tests.conftest import NOW

POSTAL = "postal_marketing"
EVENTS = ConsentEvent.__table__


def decide(session, ctx, patron, decision, at, *, purpose=POSTAL, evidence=None, email=None):
    record_decision(session, ctx, DecisionRequest(
        purpose=purpose, decision=Decision(decision), source=Source.PREFERENCE_CENTER,
        actor=Actor.PATRON, occurred_at=at, patron=patron, email=email,
        evidence=evidence or link_evidence("203.0.113.9", "Firefox/140", "tok-1")), now=NOW)
    session.commit()


@pytest.fixture
def history(session, ctx, make_patron):
    """Two patrons, each with a chain of four alternating postal decisions (link evidence on each),
    and an address-only email decision (SendGrid for an address we know no patron for)."""
    patrons = [make_patron(email=f"reader{n}@example.org") for n in (1, 2)]
    for patron in patrons:
        for hours, decision in enumerate(("opt_out", "opt_in", "opt_out", "opt_in")):
            decide(session, ctx, patron, decision, NOW - timedelta(hours=10 - hours))
    record_decision(session, ctx, DecisionRequest(
        purpose="email_marketing", decision=Decision.OPT_OUT, source=Source.SENDGRID_WEBHOOK,
        actor=Actor.SYSTEM, occurred_at=NOW - timedelta(hours=1), email="stranger@example.org",
        evidence={"sendgrid_event": "unsubscribe"}), now=NOW)
    session.commit()
    return patrons


def chain_ids(session, patron):
    return list(session.scalars(select(ConsentEvent.id).where(ConsentEvent.patron_id == patron.id)
                                .order_by(ConsentEvent.chain_seq)))


def verify(runner):
    return runner.invoke(args=["ledger", "verify"])


def tamper(session, statement, **params):
    session.execute(statement if not isinstance(statement, str) else text(statement), params)
    session.commit()
    session.expire_all()


def test_an_untouched_ledger_verifies_and_prints_its_counts(runner, history):
    result = verify(runner)
    assert result.exit_code == 0, result.output
    assert "ledger intact: 9 event(s) in 3 chain(s)" in result.output


def test_each_patron_has_its_own_chain_in_order_and_an_address_only_event_the_address_s(session, history):
    first = session.scalars(select(ConsentEvent).where(ConsentEvent.patron_id == history[0].id)
                            .order_by(ConsentEvent.id)).all()
    assert [e.chain_seq for e in first] == [1, 2, 3, 4]
    assert first[0].prev_hash == "" and all(b.prev_hash == a.hash for a, b in pairwise(first))
    stranger = session.scalar(select(ConsentEvent).where(ConsentEvent.patron_id.is_(None)))
    assert stranger.chain_key == f"a:{stranger.address_key}" and stranger.chain_seq == 1


def test_personal_evidence_is_kept_with_a_salted_digest_that_differs_between_events(session, history):
    first, second = session.scalars(select(ConsentEvent).where(
        ConsentEvent.patron_id == history[0].id).order_by(ConsentEvent.id).limit(2))
    assert first.evidence["ip"] == second.evidence["ip"] == "203.0.113.0/24"
    assert set(first.evidence_digests) == {"ip", "user_agent"}  # token_id identifies nobody
    assert first.evidence_digests["ip"] != second.evidence_digests["ip"]  # one salt per value


@pytest.mark.parametrize("change", [
    "update consent_events set decision = case decision when 'opt_in' then 'opt_out' "
    "else 'opt_in' end where id = :id",
    "update consent_events set source = 'staff_desk' where id = :id",
    "update consent_events set patron_id = :other where id = :id",
])
def test_an_edited_column_is_caught_naming_the_chain_and_the_event(session, runner, history, change):
    victim = chain_ids(session, history[0])[1]
    tamper(session, change, id=victim, other=history[1].id)
    result = verify(runner)
    assert result.exit_code != 0
    assert f"chain p:{history[0].id}, event {victim}:" in result.output
    assert "ledger NOT intact" in result.output


def test_an_edited_time_is_caught(session, runner, history):
    victim = chain_ids(session, history[0])[2]
    tamper(session, EVENTS.update().where(EVENTS.c.id == victim)
           .values(occurred_at=NOW - timedelta(days=30)))
    result = verify(runner)
    assert result.exit_code != 0
    assert f"chain p:{history[0].id}, event {victim}: altered" in result.output


@pytest.mark.parametrize("evidence", [
    {"ip": "198.51.100.0/24", "user_agent": "Firefox/140", "token_id": "tok-1"},  # a personal value
    {"ip": "203.0.113.0/24", "user_agent": "Firefox/140", "token_id": "tok-2"},  # a non-personal one
])
def test_edited_evidence_is_caught(session, runner, history, evidence):
    victim = chain_ids(session, history[1])[0]
    tamper(session, EVENTS.update().where(EVENTS.c.id == victim).values(evidence=evidence))
    result = verify(runner)
    assert result.exit_code != 0
    assert f"chain p:{history[1].id}, event {victim}:" in result.output


@pytest.mark.parametrize("position", [0, 1, 3])  # first, middle, last of the chain
def test_a_removed_event_is_caught(session, runner, history, position):
    ids = chain_ids(session, history[0])
    tamper(session, PatronDecision.__table__.delete().where(
        PatronDecision.__table__.c.patron_id == history[0].id))
    tamper(session, "delete from consent_events where id = :id", id=ids[position])
    result = verify(runner)
    assert result.exit_code != 0
    if position < 3:
        assert f"chain p:{history[0].id}, event {ids[position + 1]}: event(s) removed" in result.output
    else:
        assert (f"chain p:{history[0].id}, chain end: the last event(s) were removed"
                in result.output)
        assert f"its head says 4 event(s), 3 found, the last found is event {ids[2]}" in result.output


def test_a_chain_whose_every_event_was_removed_is_caught(session, runner, history):
    tamper(session, PatronDecision.__table__.delete().where(
        PatronDecision.__table__.c.patron_id == history[1].id))
    tamper(session, "delete from consent_events where patron_id = :id", id=history[1].id)
    result = verify(runner)
    assert result.exit_code != 0
    assert f"chain p:{history[1].id}, chain end: all 4 event(s) were removed" in result.output


def test_a_swapped_pair_of_decisions_is_caught(session, runner, history):
    first, second = chain_ids(session, history[0])[1:3]
    tamper(session, "update consent_events set decision = case id when :a then 'opt_out' "
                    "else 'opt_in' end where id in (:a, :b)", a=first, b=second)
    result = verify(runner)
    assert result.exit_code != 0
    assert f"chain p:{history[0].id}, event {first}: altered" in result.output


def test_a_swapped_pair_of_places_is_caught_as_reordered(session, runner, history):
    first, second = chain_ids(session, history[0])[1:3]
    # Move them through free places: (chain_key, chain_seq) is unique.
    tamper(session, "update consent_events set chain_seq = chain_seq + 100 where id in (:a, :b)",
           a=first, b=second)
    tamper(session, "update consent_events set chain_seq = case id when :a then 3 else 2 end "
                    "where id in (:a, :b)", a=first, b=second)
    result = verify(runner)
    assert result.exit_code != 0
    assert f"chain p:{history[0].id}, event {second}: reordered" in result.output


def test_verify_writes_nothing_and_an_empty_ledger_is_intact(runner):
    result = verify(runner)
    assert result.exit_code == 0
    assert "ledger intact: 0 event(s) in 0 chain(s)" in result.output


@pytest.mark.postgresql_only
def test_two_transactions_appending_to_one_chain_take_turns_and_both_are_chained(
        session, ctx, runner, make_patron):
    """The second transaction waits on the chain head's row lock until the first commits, then
    chains after it: no fork, no duplicate place, nothing refused."""
    patron = make_patron()
    decide(session, ctx, patron, "opt_in", NOW - timedelta(hours=3), purpose="contact_update")
    engine = db.engine  # the thread has no application context
    with Session(engine) as first_tx:
        record_decision(first_tx, ctx, DecisionRequest(
            purpose=POSTAL, decision=Decision.OPT_OUT, source=Source.STAFF_DESK, actor=Actor.STAFF,
            occurred_at=NOW - timedelta(hours=2), patron=first_tx.get(Patron, patron.id)), now=NOW)
        # the head is locked by first_tx; a second writer on its own connection must wait
        results: list[BaseException | None] = []

        def second_writer() -> None:
            try:
                with Session(engine) as second_tx:
                    record_decision(second_tx, ctx, DecisionRequest(
                        purpose="photo_video", decision=Decision.OPT_OUT, source=Source.STAFF_DESK,
                        actor=Actor.STAFF, occurred_at=NOW - timedelta(hours=1),
                        patron=second_tx.get(Patron, patron.id)), now=NOW)
                    second_tx.commit()
                results.append(None)
            except BaseException as exc:  # reported by the assertion below
                results.append(exc)

        writer = threading.Thread(target=second_writer)
        writer.start()
        writer.join(timeout=1.0)
        assert writer.is_alive(), f"the second writer did not wait for the chain's head: {results}"
        first_tx.commit()
    writer.join(timeout=30)
    assert results == [None]
    session.expire_all()
    places = session.execute(select(ConsentEvent.purpose, ConsentEvent.chain_seq)
                             .where(ConsentEvent.patron_id == patron.id)
                             .order_by(ConsentEvent.chain_seq)).all()
    assert [tuple(p) for p in places] == [("contact_update", 1), (POSTAL, 2), ("photo_video", 3)]
    assert verify(runner).exit_code == 0
