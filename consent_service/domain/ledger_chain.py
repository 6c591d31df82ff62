"""The tamper-evident ledger: each event's hash covers its content and the previous event's hash in
its subject's chain, with personal evidence covered by salted digests so that erasing it keeps the
chain verifiable.

One chain per subject: a patron (`p:<patron id>`) or, for an event with no patron, an address
(`a:<address key>`). An event's place is (chain key, sequence number, 1 for the first); its hash is

    SHA-256(previous hash || "\\n" || canonical JSON of the event)

where the canonical JSON holds every non-personal field and, for each personal evidence value, only
its digest SHA-256(salt || key || "\\0" || value) under a random salt of its own. Erasure or
retention removes a value together with its salt and keeps the digest: the chain still verifies, and
the value can no longer be tried against the digest (a truncated IP has only 2^24 candidates; without
the 128-bit salt, guessing is hopeless). The event's database id is deliberately not hashed: the place
(chain, sequence) is, and it can be computed before the row is inserted, so bulk paths insert rows
with their hashes in one statement.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

GENESIS = ""  # the "previous hash" of a chain's first event
FORMAT_VERSION = 1

# Evidence keys that identify nobody: ids of links, batches, keys and files, and how a decision
# was made. Every other key (ip, user_agent, note, staff, typed_name, anything a caller reports
# through the API) is personal and hashed under a salt.
NON_PERSONAL_EVIDENCE = frozenset({
    "token_id", "method", "notice_version", "confirmed_guardian", "guardian_link",
    "sendgrid_event", "webhook_batch", "sg_message_id", "sendgrid_list", "api_key",
    "import_file", "line", "source_detail", "erasure",
})
# What retention drops first (CONSENT_RETENTION_EVIDENCE_DAYS): the client's network and browser.
CLIENT_EVIDENCE = frozenset({"ip", "user_agent"})


def chain_key(patron_id: int | None, address_key: str | None) -> str:
    """The chain an event belongs to: its patron's, else its address's."""
    if patron_id is not None:
        return f"p:{patron_id}"
    if address_key:
        return f"a:{address_key}"
    raise ValueError("an event needs a patron or an address")


def is_personal(key: str) -> bool:
    return key not in NON_PERSONAL_EVIDENCE


def personal_digest(salt: str, key: str, value: str) -> str:
    """The digest that stands for one personal evidence value in the hash."""
    return hashlib.sha256(f"{salt}{key}\0{value}".encode()).hexdigest()


@dataclass(frozen=True)
class SealedEvidence:
    """Evidence split for the chain: the values kept (personal and not), a salt per personal value
    still present, and a digest per personal value ever given (kept when the value is removed)."""

    values: dict[str, str]
    salts: dict[str, str]
    digests: dict[str, str]


def seal_evidence(evidence: Mapping[str, str],
                  new_salt: Callable[[], str] = lambda: secrets.token_hex(16)) -> SealedEvidence:
    """Give each personal value a fresh salt and its digest."""
    values = {str(k): str(v) for k, v in evidence.items()}
    salts = {k: new_salt() for k in values if is_personal(k)}
    digests = {k: personal_digest(salts[k], k, values[k]) for k in salts}
    return SealedEvidence(values, salts, digests)


def forget_evidence(sealed: SealedEvidence, keys: Iterable[str] | None = None) -> SealedEvidence:
    """Remove personal values (those named, or all) with their salts; the digests stay. Non-personal
    values are never removed: they are what the library keeps."""
    chosen = {k for k in sealed.salts} if keys is None else {k for k in keys if is_personal(k)}
    return SealedEvidence(
        {k: v for k, v in sealed.values.items() if k not in chosen},
        {k: v for k, v in sealed.salts.items() if k not in chosen},
        dict(sealed.digests),
    )


@dataclass(frozen=True)
class ChainedEvent:
    """What the hash covers: an event's non-personal fields, its place, and its evidence."""

    patron_id: int | None
    address_key: str | None
    purpose: str
    topic: str
    decision: str
    source: str
    actor: str
    actor_ref: str | None
    policy_version_id: int | None
    occurred_at: datetime
    recorded_at: datetime
    effective: bool
    sg_event_id: str | None
    evidence: SealedEvidence = field(default_factory=lambda: SealedEvidence({}, {}, {}))
    chain_seq: int = 0

    @property
    def chain(self) -> str:
        return chain_key(self.patron_id, self.address_key)


def _instant(at: datetime) -> str:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("the ledger's times are aware")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(event: ChainedEvent) -> bytes:
    """The event's bytes as hashed: sorted JSON of the non-personal fields, the non-personal
    evidence, and the digests of the personal evidence (never the personal values)."""
    sealed = event.evidence
    content = {
        "v": FORMAT_VERSION,
        "chain": event.chain,
        "seq": event.chain_seq,
        "patron_id": event.patron_id,
        "address_key": event.address_key,
        "purpose": event.purpose,
        "topic": event.topic,
        "decision": event.decision,
        "source": event.source,
        "actor": event.actor,
        "actor_ref": event.actor_ref,
        "policy_version_id": event.policy_version_id,
        "occurred_at": _instant(event.occurred_at),
        "recorded_at": _instant(event.recorded_at),
        "effective": event.effective,
        "sg_event_id": event.sg_event_id,
        "evidence": {k: v for k, v in sealed.values.items() if not is_personal(k)},
        "personal": dict(sealed.digests),
    }
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def event_hash(previous: str, event: ChainedEvent) -> str:
    return hashlib.sha256(previous.encode() + b"\n" + canonical(event)).hexdigest()


@dataclass(frozen=True)
class Head:
    """A chain's end as last recorded: how many events, and the last one's hash."""

    length: int = 0
    last_hash: str = GENESIS


@dataclass(frozen=True)
class Link:
    """Where a new event goes and what it hashes to."""

    chain: str
    seq: int
    prev_hash: str
    hash: str


def link_events(heads: Mapping[str, Head], events: Sequence[ChainedEvent]
                ) -> tuple[list[Link], dict[str, Head]]:
    """Chain new events, in the order given, onto the heads of their chains (a chain missing from
    `heads` starts empty). Returns each event's link and the new heads of the chains touched. Many
    events and many chains in one call, for the bulk paths."""
    current = dict(heads)
    links: list[Link] = []
    touched: dict[str, Head] = {}
    for event in events:
        key = event.chain
        head = current.get(key, Head())
        placed = replace(event, chain_seq=head.length + 1)
        digest = event_hash(head.last_hash, placed)
        links.append(Link(key, placed.chain_seq, head.last_hash, digest))
        current[key] = touched[key] = Head(placed.chain_seq, digest)
    return links, touched


@dataclass(frozen=True)
class StoredEvent:
    """An event as read back for verification: its id, content and stored chain fields."""

    id: int
    content: ChainedEvent
    chain: str
    seq: int
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class Problem:
    """The first thing wrong in a chain, in words for the operator."""

    chain: str
    event_id: int | None
    what: str

    def __str__(self) -> str:
        where = f"event {self.event_id}" if self.event_id is not None else "chain end"
        return f"chain {self.chain}, {where}: {self.what}"


def check_evidence(sealed: SealedEvidence) -> str | None:
    """Why this evidence cannot be what was hashed: a personal value whose digest does not match,
    or a personal value with no digest. A value removed with its salt is fine (erasure, retention)."""
    for key, value in sorted(sealed.values.items()):
        if not is_personal(key):
            continue
        salt = sealed.salts.get(key)
        digest = sealed.digests.get(key)
        if salt is None or digest is None or personal_digest(salt, key, value) != digest:
            return f"evidence {key!r} was altered"
    return None


def verify_chain(chain: str, events: Sequence[StoredEvent], head: Head | None) -> Problem | None:
    """The first altered, removed or reordered event of one chain, walked by sequence number, or
    None when every hash follows from the one before and the chain ends where its head says."""
    previous = GENESIS
    expected_seq = 1
    last_id: int | None = None
    for stored in events:
        if stored.chain != chain or stored.content.chain != chain:
            return Problem(chain, stored.id, "moved from another chain (its subject was changed)")
        if stored.seq < expected_seq:
            return Problem(chain, stored.id, f"a second event at position {stored.seq}")
        if stored.seq > expected_seq:
            missing = (f"position {expected_seq}" if stored.seq == expected_seq + 1
                       else f"positions {expected_seq}-{stored.seq - 1}")
            return Problem(chain, stored.id, f"event(s) removed before it ({missing} missing)")
        if last_id is not None and stored.id < last_id:
            return Problem(chain, stored.id, f"reordered: comes after event {last_id} in the chain "
                                             "but was inserted before it")
        if stored.prev_hash != previous:
            follows = next((e for e in events if e.hash == stored.prev_hash), None)
            if follows is not None:
                return Problem(chain, stored.id, f"reordered: it was chained after event {follows.id}, "
                                                 f"now at position {follows.seq}")
            return Problem(chain, stored.id, "does not follow the event before it (the one before "
                                             "was altered)")
        wrong_evidence = check_evidence(stored.content.evidence)
        if wrong_evidence:
            return Problem(chain, stored.id, wrong_evidence)
        if event_hash(previous, replace(stored.content, chain_seq=stored.seq)) != stored.hash:
            return Problem(chain, stored.id, "altered: its content does not match its hash")
        previous = stored.hash
        expected_seq += 1
        last_id = stored.id
    length = expected_seq - 1
    if head is None:
        if length:
            return Problem(chain, None, "no head recorded for this chain")
        return None
    if head.length != length or head.last_hash != previous:
        after = f", the last found is event {last_id}" if last_id is not None else ""
        return Problem(chain, None, f"the last event(s) were removed or the chain's end altered: "
                                    f"its head says {head.length} event(s), {length} found{after}")
    return None
