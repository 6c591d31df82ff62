"""The ledger chain migration on a database with events already recorded: it chains them in id
order, per patron or address, seals their personal evidence, and `ledger verify` passes."""

from __future__ import annotations

import json

from sqlalchemy import create_engine, text

from tests.integration.test_migrations_and_config import flask_command

BEFORE_CHAIN = "5c0ffee7d1d5"


def test_events_recorded_before_the_chain_are_chained_by_the_migration(tmp_path):
    url = f"sqlite:///{tmp_path / 'consent.sqlite3'}"
    assert flask_command("db", "upgrade", BEFORE_CHAIN, database_url=url).returncode == 0
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(
            "insert into patrons (id, public_id, card_number, first_name, last_name, "
            "preferred_language, street, city, state, postal_code, status, created_at, updated_at) "
            "values (1, 'p_one', 'C1', 'Ana', 'Ruiz', 'en', '', '', '', '', 'active', "
            "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"))
        for n, (patron, address, decision, evidence) in enumerate([
                (1, None, "opt_out", {"ip": "203.0.113.0/24", "token_id": "t1"}),
                (None, "k" * 64, "opt_out", {"sendgrid_event": "unsubscribe"}),
                (1, None, "opt_in", {"note": "phoned"})], start=1):
            conn.execute(text(
                "insert into consent_events (id, patron_id, address_key, purpose, topic, decision, "
                "source, actor, occurred_at, recorded_at, effective, evidence, txid) values "
                "(:id, :patron, :address, 'postal_marketing', '', :decision, 'import', 'patron', "
                ":at, :at, 1, :evidence, 0)"),
                {"id": n, "patron": patron, "address": address, "decision": decision,
                 "at": f"2026-01-0{n} 12:00:00.000000", "evidence": json.dumps(evidence)})
    engine.dispose()

    upgraded = flask_command("db", "upgrade", database_url=url)
    assert upgraded.returncode == 0, upgraded.stderr

    with create_engine(url).connect() as conn:
        rows = conn.execute(text("select id, chain_key, chain_seq, evidence, evidence_digests "
                                 "from consent_events order by id")).all()
        heads = dict(conn.execute(text("select chain_key, length from ledger_chain_heads")).all())
    assert [(r.chain_key, r.chain_seq) for r in rows] == [("p:1", 1), ("a:" + "k" * 64, 1), ("p:1", 2)]
    assert json.loads(rows[0].evidence) == {"ip": "203.0.113.0/24", "token_id": "t1"}
    assert set(json.loads(rows[0].evidence_digests)) == {"ip"}
    assert heads == {"p:1": 2, "a:" + "k" * 64: 1}
    verify = flask_command("ledger", "verify", database_url=url)
    assert verify.returncode == 0, verify.stderr
    assert "ledger intact: 3 event(s) in 2 chain(s)" in verify.stdout
