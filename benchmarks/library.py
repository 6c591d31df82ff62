"""A synthetic library of N patrons: as the ILS's CSV for `patrons import`, or loaded into a database
with its ledger (events, projections, suppressions, undeliverable addresses, guardian links).

The same seed gives the same patrons both ways. The mix (issue 14): about 15% under 17 of whom 8% of
all patrons are under 13 and linked to a guardian (an adult earlier in the file), 5% sharing a
household address with another patron, 3% of addresses undeliverable, 10% of patrons with some
opt-outs; besides, 3% inactive, 4% without email, 10% without a complete postal address, half of
the children with email given a guardian's opt-in, 0.3% of addresses suppressed after a spam report.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.harness import ADDRESS_HASH_KEY

SEED = 2026
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TOPICS = {"events": 101, "kids_teens": 102, "adult_learning": 103, "library_news": 104}
IMPORT_COLUMNS = ("card_number", "first_name", "last_name", "email", "birth_date",
                  "preferred_language", "street", "city", "state", "postal_code",
                  "guardian_card_number", "guardian_email", "status")
FIRST_NAMES = ("Ana", "Ben", "Carmen", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal",
               "Kai", "Lucía", "Mateo", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tomás")
LAST_NAMES = ("Garcia", "Smith", "Martinez", "Nguyen", "Johnson", "Lopez", "Brown", "Hernandez",
              "Kim", "Davis", "Ortiz", "Wilson", "Romero", "Chavez", "Baker", "Sanchez")
CITIES = (("Castle Rock", "80104"), ("Parker", "80134"), ("Highlands Ranch", "80126"),
          ("Lone Tree", "80124"), ("Roxborough", "80125"))


@dataclass
class GeneratedPatron:
    """One patron as the generator makes it (id = position in the file, from 1)."""

    id: int
    public_id: str
    card_number: str
    first_name: str
    last_name: str
    email: str | None
    birth_date: date | None
    preferred_language: str
    street: str
    city: str
    state: str
    postal_code: str
    status: str
    guardian_id: int | None
    # ledger facts for the database form (the CSV does not carry decisions)
    opt_outs: tuple[tuple[str, str], ...]  # (purpose, topic) opted out
    guardian_opt_in: bool
    suppressed: bool
    undeliverable: bool

    @property
    def card(self) -> str:
        return self.card_number


def card_of(patron_id: int) -> str:
    return f"2{patron_id:013d}"


def address_key(email: str) -> str:
    """What `ServiceContext.address_key` gives with the benchmarks' key (HMAC-SHA256, hex)."""
    return hmac.new(ADDRESS_HASH_KEY.encode("utf-8"), email.encode("utf-8"),
                    hashlib.sha256).hexdigest()


def patrons(count: int, seed: int = SEED) -> Iterator[GeneratedPatron]:
    """`count` patrons with the mix above, deterministic for a seed."""
    rng = random.Random(seed)
    households: list[str] = []  # addresses another patron may share
    adults: list[int] = []  # recent adults, candidate guardians
    today = NOW.date()
    for patron_id in range(1, count + 1):
        roll = rng.random()
        guardian_id = None
        if roll < 0.08 and adults:  # under 13, linked to a guardian
            birth: date | None = today - timedelta(days=rng.randint(365, 12 * 365))
            guardian_id = rng.choice(adults)
        elif roll < 0.15:  # 13 to 16
            birth = today - timedelta(days=rng.randint(13 * 365 + 4, 17 * 365 - 4))
        elif roll < 0.97:
            birth = date(rng.randint(1935, 2005), rng.randint(1, 12), rng.randint(1, 28))
        else:
            birth = None
        child = guardian_id is not None
        email: str | None = None
        if rng.random() >= 0.04:
            if households and rng.random() < 0.05:
                email = rng.choice(households)
            else:
                email = f"patron{patron_id}@example.org"
                if len(households) < 50_000:
                    households.append(email)
                else:
                    households[rng.randrange(len(households))] = email
        if not child and birth is not None and birth.year < 2005:
            if len(adults) < 10_000:
                adults.append(patron_id)
            else:
                adults[rng.randrange(len(adults))] = patron_id
        city, postal_code = rng.choice(CITIES)
        has_postal = rng.random() < 0.9
        opt_outs: tuple[tuple[str, str], ...] = ()
        roll = rng.random()
        if roll < 0.04:
            opt_outs = (("email_marketing", ""),)
        elif roll < 0.07:
            opt_outs = (("email_marketing", "events"),)
        elif roll < 0.085:
            opt_outs = (("email_marketing", "library_news"), ("postal_marketing", ""))
        elif roll < 0.10:
            opt_outs = (("postal_marketing", ""),)
        roll = rng.random()
        yield GeneratedPatron(
            id=patron_id,
            public_id=f"p_{rng.getrandbits(96):024x}",
            card_number=card_of(patron_id),
            first_name=rng.choice(FIRST_NAMES),
            last_name=rng.choice(LAST_NAMES),
            email=email,
            birth_date=birth,
            preferred_language="es" if rng.random() < 0.15 else "en",
            street=f"{rng.randint(1, 9999)} Main St" if has_postal else "",
            city=city if has_postal else "",
            state="CO" if has_postal else "",
            postal_code=postal_code if has_postal else "",
            status="inactive" if rng.random() < 0.03 else "active",
            guardian_id=guardian_id,
            opt_outs=opt_outs,
            guardian_opt_in=(child and email is not None and rng.random() < 0.5
                             and ("email_marketing", "") not in opt_outs),
            suppressed=email is not None and roll < 0.003,
            undeliverable=email is not None and 0.003 <= roll < 0.033,
        )


def write_import_csv(path: Path, count: int, seed: int = SEED) -> dict[str, int]:
    """The patrons as the ILS exports them (the documented import header); returns counts."""
    stats = {"patrons": 0, "with_guardian": 0, "under_17": 0}
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(IMPORT_COLUMNS)
        for p in patrons(count, seed):
            writer.writerow((p.card_number, p.first_name, p.last_name, p.email or "",
                             p.birth_date.isoformat() if p.birth_date else "", p.preferred_language,
                             p.street, p.city, p.state, p.postal_code,
                             card_of(p.guardian_id) if p.guardian_id else "", "", p.status))
            stats["patrons"] += 1
            stats["with_guardian"] += p.guardian_id is not None
            stats["under_17"] += p.birth_date is not None and (NOW.date() - p.birth_date).days < 17 * 365
    return stats


def load_library(database_url: str, count: int, seed: int = SEED, batch: int = 20_000
                 ) -> dict[str, int]:
    """Create the schema in `database_url` (its tables dropped first) and load the patrons with their
    ledger: an event per decision with its projection rows, guardian links, suppressions and
    undeliverable addresses, and the four topics mapped to SendGrid groups. Core executemany,
    `batch` patrons at a time (the loader is not what is measured)."""
    from sqlalchemy import insert

    from benchmarks.harness import app_environment
    from consent_service import create_app
    from consent_service.extensions import db
    from consent_service.models import (
        AddressDecision,
        AddressSuppression,
        ConsentEvent,
        GuardianLink,
        Patron,
        PatronDecision,
        Topic,
        UndeliverableAddress,
    )
    from consent_service.services.ledger_chain import chain_new_events

    environment = app_environment(database_url)
    app = create_app({"SQLALCHEMY_DATABASE_URI": database_url,
                      "SECRET_KEY": environment["CONSENT_SECRET_KEY"],
                      "ADDRESS_HASH_KEY": environment["CONSENT_ADDRESS_HASH_KEY"],
                      "MAIL_BACKEND": "memory"})
    stats = {"patrons": 0, "events": 0, "children": 0, "guardian_links": 0, "suppressed": 0,
             "undeliverable": 0, "with_opt_outs": 0}
    with app.app_context():
        db.drop_all()
        db.create_all()
        session = db.session
        session.execute(insert(Topic), [
            {"key": key, "name": key.replace("_", " ").title(), "sendgrid_group_id": group,
             "created_at": NOW} for key, group in TOPICS.items()])
        tables: dict[Any, list[dict[str, Any]]] = {
            Patron: [], ConsentEvent: [], PatronDecision: [], AddressDecision: [], GuardianLink: [],
            AddressSuppression: [], UndeliverableAddress: []}
        decided_addresses: set[tuple[str, str, str]] = set()
        marked: set[str] = set()
        event_id = 0
        rng = random.Random(seed + 1)

        def flush() -> None:
            chain(tables[ConsentEvent])
            for model, rows in tables.items():
                if rows:
                    session.execute(insert(model), rows)
                    rows.clear()
            session.commit()

        def chain(rows: list[dict[str, Any]]) -> None:
            """Chain the events as the service does (its one bulk entry point), so the ledger
            of the generated library verifies like a real one."""
            events = [ConsentEvent(**row) for row in rows]
            chain_new_events(session, events)
            for row, event in zip(rows, events, strict=True):
                row.update({name: getattr(event, name) for name in (
                    "evidence", "evidence_salts", "evidence_digests", "chain_key", "chain_seq",
                    "prev_hash", "hash")})

        def decide(p: GeneratedPatron, key: str | None, purpose: str, topic: str, decision: str,
                   actor: str) -> None:
            nonlocal event_id
            event_id += 1
            at = NOW - timedelta(days=rng.randint(1, 900), seconds=rng.randint(0, 86399))
            tables[ConsentEvent].append({
                "id": event_id, "patron_id": p.id, "address_key": key, "purpose": purpose,
                "topic": topic, "decision": decision, "source": "staff_desk", "actor": actor,
                "occurred_at": at, "recorded_at": at, "effective": True, "evidence": {}})
            projection = {"purpose": purpose, "topic": topic, "decision": decision, "actor": actor,
                          "occurred_at": at, "event_id": event_id}
            tables[PatronDecision].append({"patron_id": p.id, **projection})
            if key is not None and (key, purpose, topic) not in decided_addresses:
                decided_addresses.add((key, purpose, topic))
                tables[AddressDecision].append({"address_key": key, **projection})

        for p in patrons(count, seed):
            key = address_key(p.email) if p.email else None
            tables[Patron].append({
                "id": p.id, "public_id": p.public_id, "card_number": p.card_number,
                "first_name": p.first_name, "last_name": p.last_name, "email": p.email,
                "address_key": key, "birth_date": p.birth_date,
                "preferred_language": p.preferred_language, "street": p.street, "city": p.city,
                "state": p.state, "postal_code": p.postal_code, "status": p.status,
                "created_at": NOW, "updated_at": NOW})
            stats["patrons"] += 1
            if p.guardian_id is not None:
                stats["children"] += 1
                stats["guardian_links"] += 1
                tables[GuardianLink].append({"public_id": f"g_{p.id:020d}", "child_id": p.id,
                                             "guardian_id": p.guardian_id, "created_at": NOW})
            for purpose, topic in p.opt_outs:
                channel_key = key if purpose == "email_marketing" else None
                if purpose == "email_marketing" and key is None:
                    continue
                decide(p, channel_key, purpose, topic, "opt_out", "patron")
            stats["with_opt_outs"] += bool(p.opt_outs)
            if p.guardian_opt_in and key is not None:
                decide(p, key, "email_marketing", "", "opt_in", "guardian")
            if key is not None and key not in marked and (p.suppressed or p.undeliverable):
                marked.add(key)
                if p.suppressed:
                    stats["suppressed"] += 1
                    tables[AddressSuppression].append({
                        "address_key": key, "reason": "spamreport",
                        "suppressed_at": NOW - timedelta(days=3)})
                else:
                    stats["undeliverable"] += 1
                    tables[UndeliverableAddress].append({
                        "address_key": key, "reason": "bounce",
                        "occurred_at": NOW - timedelta(days=2)})
            if len(tables[Patron]) >= batch:
                flush()
        flush()
        stats["events"] = event_id
        if db.engine.dialect.name == "postgresql":  # ids were given: move the sequences past them
            from sqlalchemy import text
            for table in ("patrons", "consent_events", "guardian_links"):
                session.execute(text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"))
            session.commit()
            # A library in service has statistics; a freshly loaded one gets them only when
            # autovacuum comes by, and until then the planner may scan where it would use an index.
            session.execute(text("ANALYZE"))  # (unlike VACUUM, it runs inside a transaction)
            session.commit()
        session.remove()
        db.engine.dispose()
    return stats


def create_schema(database_url: str) -> None:
    """An empty database with the service's tables (its tables dropped first)."""
    from benchmarks.harness import app_environment
    from consent_service import create_app
    from consent_service.extensions import db

    environment = app_environment(database_url)
    app = create_app({"SQLALCHEMY_DATABASE_URI": database_url,
                      "SECRET_KEY": environment["CONSENT_SECRET_KEY"],
                      "ADDRESS_HASH_KEY": environment["CONSENT_ADDRESS_HASH_KEY"],
                      "MAIL_BACKEND": "memory"})
    with app.app_context():
        db.drop_all()
        db.create_all()
        db.session.remove()
        db.engine.dispose()
