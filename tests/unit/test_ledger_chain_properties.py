"""The ledger chain's rules as properties: any history chained then verified is intact; removing
personal evidence (with its salt) keeps it intact; any change to a hashed field, any removed event
and any swapped pair is caught at the right event."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from consent_service.domain.ledger_chain import (
    ChainedEvent,
    StoredEvent,
    check_evidence,
    forget_evidence,
    link_events,
    personal_digest,
    seal_evidence,
    verify_chain,
)

START = datetime(2026, 1, 1, tzinfo=UTC)

evidence = st.dictionaries(
    st.sampled_from(["ip", "user_agent", "note", "token_id", "method", "staff"]),
    st.text(min_size=1, max_size=12), max_size=4)
events = st.lists(st.builds(
    lambda patron, decision, minutes, proof: ChainedEvent(
        patron_id=patron, address_key=None, purpose="postal_marketing", topic="",
        decision=decision, source="preference_center", actor="patron", actor_ref=None,
        policy_version_id=None, occurred_at=START + timedelta(minutes=minutes),
        recorded_at=START + timedelta(minutes=minutes), effective=True, sg_event_id=None,
        evidence=seal_evidence(proof)),
    st.sampled_from([1, 2]), st.sampled_from(["opt_in", "opt_out"]),
    st.integers(0, 10_000), evidence), min_size=1, max_size=8)


def stored(history):
    links, heads = link_events({}, history)
    rows = [StoredEvent(n, replace(event, chain_seq=link.seq), link.chain, link.seq, link.prev_hash,
                        link.hash) for n, (event, link) in enumerate(zip(history, links, strict=True), 1)]
    return rows, heads


def chains(rows):
    by_chain: dict[str, list[StoredEvent]] = {}
    for row in rows:
        by_chain.setdefault(row.chain, []).append(row)
    return {key: sorted(found, key=lambda r: r.seq) for key, found in by_chain.items()}


@given(events)
def test_a_chained_history_verifies(history):
    rows, heads = stored(history)
    for key, found in chains(rows).items():
        assert verify_chain(key, found, heads[key]) is None


@given(events)
def test_removing_personal_evidence_with_its_salt_keeps_the_chain_intact(history):
    rows, heads = stored(history)
    forgotten = [replace(row, content=replace(row.content, evidence=forget_evidence(
        row.content.evidence))) for row in rows]
    for key, found in chains(forgotten).items():
        assert verify_chain(key, found, heads[key]) is None
    assert all(not any(k in row.content.evidence.values for k in row.content.evidence.salts)
               for row in forgotten)


@given(events, st.data())
def test_a_changed_decision_is_caught_at_that_event(history, data):
    rows, heads = stored(history)
    victim = data.draw(st.sampled_from(rows))
    flipped = "opt_in" if victim.content.decision == "opt_out" else "opt_out"
    changed = [replace(r, content=replace(r.content, decision=flipped)) if r is victim else r
               for r in rows]
    problem = verify_chain(victim.chain, chains(changed)[victim.chain], heads[victim.chain])
    assert problem is not None and problem.event_id == victim.id


@given(events, st.data())
def test_a_removed_event_is_caught(history, data):
    rows, heads = stored(history)
    victim = data.draw(st.sampled_from(rows))
    left = chains([r for r in rows if r is not victim]).get(victim.chain, [])
    assert verify_chain(victim.chain, left, heads[victim.chain]) is not None


@given(events, st.data())
def test_a_swapped_pair_is_caught(history, data):
    rows, heads = stored(history)
    chain = data.draw(st.sampled_from(sorted({r.chain for r in rows})))
    found = chains(rows)[chain]
    if len(found) < 2:
        return
    i = data.draw(st.integers(0, len(found) - 2))
    swapped = [*found[:i], replace(found[i + 1], seq=found[i].seq),
               replace(found[i], seq=found[i + 1].seq), *found[i + 2:]]
    assert verify_chain(chain, swapped, heads[chain]) is not None


def test_a_personal_value_edited_in_place_is_caught_and_a_digest_without_its_salt_is_not_guessable():
    sealed = seal_evidence({"ip": "203.0.113.0/24", "token_id": "t"})
    assert check_evidence(sealed) is None
    assert check_evidence(replace(sealed, values={**sealed.values, "ip": "198.51.100.0/24"}))
    forgotten = forget_evidence(sealed)
    assert forgotten.values == {"token_id": "t"} and forgotten.salts == {}
    assert forgotten.digests["ip"] != personal_digest("", "ip", "203.0.113.0/24")
