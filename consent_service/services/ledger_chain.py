"""The ledger's hash chains in the database: chaining new events under a lock on their chains'
heads, removing personal evidence without breaking them, and verifying every chain."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from consent_service.domain.ledger_chain import (
    ChainedEvent,
    Head,
    Problem,
    SealedEvidence,
    StoredEvent,
    forget_evidence,
    link_events,
    seal_evidence,
    verify_chain,
)
from consent_service.models import ConsentEvent, LedgerChainHead

VERIFY_BATCH = 2000


def chain_new_events(session: Session, events: Sequence[ConsentEvent]) -> None:
    """Seal the evidence of new, not yet inserted events and chain them, in the order given, onto
    their chains, in the caller's transaction: the chains' heads are locked (SELECT … FOR UPDATE on
    PostgreSQL; SQLite has one writer) until it commits, so two transactions appending to the same
    chain take turns and never fork it, while different patrons' chains never wait on each other.
    Every path that inserts events goes through here; a bulk path passes all its events at once
    (one statement to lock the heads, one to update them)."""
    if not events:
        return
    for event in events:
        sealed = seal_evidence(event.evidence or {})
        event.evidence = sealed.values
        event.evidence_salts = sealed.salts
        event.evidence_digests = sealed.digests
    contents = [_content(event) for event in events]
    heads = _lock_heads(session, sorted({content.chain for content in contents}))
    links, touched = link_events(heads, contents)
    for event, link in zip(events, links, strict=True):
        event.chain_key, event.chain_seq = link.chain, link.seq
        event.prev_hash, event.hash = link.prev_hash, link.hash
    session.execute(update(_HEADS).where(_HEADS.c.chain_key == bindparam("key")).values(
        length=bindparam("new_length"), last_hash=bindparam("new_hash")),
        [{"key": key, "new_length": head.length, "new_hash": head.last_hash}
         for key, head in touched.items()])
    for key in touched:  # an instance of a head already in the session is read again when used
        stale = session.identity_map.get(identity_key(LedgerChainHead, (key,)))
        if stale is not None:
            session.expire(stale)


_HEADS: Table = LedgerChainHead.__table__  # type: ignore[assignment]


def _lock_heads(session: Session, keys: list[str]) -> dict[str, Head]:
    """The heads of these chains, created empty when new, locked for this transaction (in key
    order, so that two transactions locking several chains cannot deadlock). Table rows, not ORM
    objects: an insert executemany (one compiled statement whatever the number of chains) and
    one select."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(_HEADS).on_conflict_do_nothing(),
                    [{"chain_key": key, "length": 0, "last_hash": ""} for key in keys])
    rows = session.execute(select(_HEADS.c.chain_key, _HEADS.c.length, _HEADS.c.last_hash)
                           .where(_HEADS.c.chain_key.in_(keys))
                           .order_by(_HEADS.c.chain_key).with_for_update())
    return {key: Head(length, last_hash) for key, length, last_hash in rows}


def _sealed(event: ConsentEvent) -> SealedEvidence:
    return SealedEvidence(dict(event.evidence or {}), dict(event.evidence_salts or {}),
                          dict(event.evidence_digests or {}))


def _content(event: ConsentEvent) -> ChainedEvent:
    return ChainedEvent(
        patron_id=event.patron_id, address_key=event.address_key, purpose=event.purpose,
        topic=event.topic, decision=event.decision, source=event.source, actor=event.actor,
        actor_ref=event.actor_ref, policy_version_id=event.policy_version_id,
        occurred_at=event.occurred_at, recorded_at=event.recorded_at, effective=event.effective,
        sg_event_id=event.sg_event_id, evidence=_sealed(event))


def forget_personal_evidence(event: ConsentEvent, keys: Iterable[str] | None = None) -> bool:
    """Remove personal evidence values (those named, or all) from an event with their salts,
    keeping their digests, so the chain still verifies. True when something was removed."""
    before = _sealed(event)
    after = forget_evidence(before, keys)
    if after.values == before.values:
        return False
    event.evidence = after.values
    event.evidence_salts = after.salts
    return True


@dataclass
class LedgerReport:
    """What `verify_ledger` found: counts, and the first problem of each broken chain."""

    chains: int = 0
    events: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


def verify_ledger(session: Session) -> LedgerReport:
    """Walk every chain in order of its events' places and report, per chain, the first event
    altered (content, evidence or place), removed (first, middle or last) or reordered. Reads in
    batches; writes nothing."""
    report = LedgerReport()
    heads = {h.chain_key: h for h in session.scalars(select(LedgerChainHead))}
    seen: set[str] = set()
    for key, stored in groupby(_stored_events(session), key=lambda s: s.chain):
        seen.add(key)
        events = list(stored)
        report.chains += 1
        report.events += len(events)
        head = heads.get(key)
        problem = verify_chain(key, events, Head(head.length, head.last_hash) if head else None)
        if problem:
            report.problems.append(problem)
    for key in sorted(set(heads) - seen):
        if heads[key].length:
            report.chains += 1
            report.problems.append(Problem(key, None, f"all {heads[key].length} event(s) were removed"))
    return report


def _stored_events(session: Session) -> Iterator[StoredEvent]:
    query = (select(ConsentEvent).order_by(ConsentEvent.chain_key, ConsentEvent.chain_seq,
                                           ConsentEvent.id)
             .execution_options(yield_per=VERIFY_BATCH))
    for event in session.scalars(query):
        yield StoredEvent(event.id, _content(event), event.chain_key, event.chain_seq,
                          event.prev_hash, event.hash)
        session.expunge(event)
