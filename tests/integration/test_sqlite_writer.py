"""SQLite's write turn (consent_service/sqlite_writer.py, services/write_turn.py): processes
writing one database file at once take turns, lose nothing and never say "database is locked"."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from consent_service import runtime
from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.domain.tokens import LinkKind
from consent_service.extensions import db
from consent_service.models import AddressDecision, ConsentEvent, Patron, PatronDecision, Topic
from consent_service.services import decisions
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.ledger_chain import verify_ledger
from consent_service.sqlite_writer import WriterTurn, starts_writing, writer_turn
from tests.conftest import NOW, app_config

pytestmark = pytest.mark.sqlite_only

# One process of the service: the app on the shared file, each of its links clicked as a mail
# provider's one-click POST, the statuses printed as JSON. It starts at the given instant, so that
# both processes click at once.
CLICKER = """
import json, sys, time
from datetime import datetime
from consent_service import create_app
config, paths, start = json.loads(sys.argv[1])
now = datetime.fromisoformat(config.pop("NOW"))
config["CLOCK"] = lambda: now
app = create_app(config)
client = app.test_client()
client.get("/healthz")
while time.time() < start:
    time.sleep(0.001)
statuses = []
for path in paths:
    answer = client.post(path, data={"List-Unsubscribe": "One-Click"})
    statuses.append(answer.status_code)
    if answer.status_code != 200:
        print(answer.get_data(as_text=True)[-500:], file=sys.stderr)
print(json.dumps(statuses))
"""


def test_statements_that_write_take_the_turn_and_reads_do_not():
    for statement in ("INSERT INTO t VALUES (1)", "  update t set x = 1", "DELETE FROM t",
                      "REPLACE INTO t VALUES (1)", "CREATE TABLE t (x)", "BEGIN IMMEDIATE",
                      "begin exclusive"):
        assert starts_writing(statement), statement
    for statement in ("SELECT 1", "BEGIN", "SAVEPOINT sa_1", "COMMIT", "PRAGMA journal_mode=WAL",
                      "ROLLBACK"):
        assert not starts_writing(statement), statement


def test_two_processes_clicking_one_click_links_at_once_on_shared_addresses_record_each_opt_out_once(
        tmp_path: Path):
    """Pairs of patrons share an address; one process clicks the first of each pair, the other the
    second, at the same moment. Every click is answered 200, and each address has one opt-out in
    force: the second click of a pair read the address's state
    inside its write turn, so it found the first's. Reading before the turn, both found none and
    both inserted the address's projection row: one failed on its key (a 500)."""
    database = tmp_path / "consent.sqlite3"
    config = app_config(tmp_path, SQLALCHEMY_DATABASE_URI=f"sqlite:///{database}")
    app = _app(config)
    pairs = 60
    with app.app_context():
        db.create_all()
        db.session.add(Topic(key="events", name="Library events", created_at=NOW))
        ctx = runtime.context(app)
        firsts, seconds = [], []
        for n in range(pairs):
            email = f"household{n}@example.org"
            for number, side in enumerate((firsts, seconds)):
                patron = Patron(card_number=f"21{n:04d}{number}",
                                first_name="Reader", last_name="Example", email=email,
                                address_key=ctx.address_key(email), created_at=NOW,
                                updated_at=NOW)
                db.session.add(patron)
                db.session.flush()
                side.append("/unsubscribe/" + ctx.signer.sign(LinkKind.UNSUBSCRIBE,
                                                              patron.public_id, "events"))
        db.session.commit()

    start = time.time() + 3
    child_config = {**config, "NOW": NOW.isoformat()}
    clickers = [subprocess.Popen([sys.executable, "-c", CLICKER,
                                  json.dumps([child_config, paths, start])],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for paths in (firsts, seconds)]
    outputs = [clicker.communicate(timeout=120) for clicker in clickers]

    for (out, err), clicker in zip(outputs, clickers, strict=True):
        assert clicker.returncode == 0, err[-2000:]
        assert json.loads(out) == [200] * pairs, err[-2000:]
        assert "database is locked" not in err
    with app.app_context():
        opt_outs = db.session.execute(
            select(ConsentEvent.address_key, func.count()).where(
                ConsentEvent.decision == "opt_out").group_by(ConsentEvent.address_key)).all()
        # the second click of a pair records its patron's opt-out too, unless the first's was in
        # force already when it opened the link (then nothing is written: it is in force)
        assert len(opt_outs) == pairs
        assert {count for _, count in opt_outs} <= {1, 2}
        assert db.session.scalar(select(func.count()).select_from(AddressDecision)) == pairs
        assert db.session.scalar(select(func.count()).select_from(PatronDecision)) == sum(
            count for _, count in opt_outs)
        assert verify_ledger(db.session).intact


def test_record_decision_reads_what_is_in_force_as_the_databases_one_writer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`record_decision` takes the write turn before it reads the decisions in force, whoever calls
    it (`_take_turns`): while it reads, another connection cannot write, so no decision can be
    committed between what it read and what it writes. Reading outside the transaction, another
    process's newer decision committed meanwhile was overwritten by the older one's projection
    row."""
    database = tmp_path / "consent.sqlite3"
    app = _app(app_config(tmp_path, SQLALCHEMY_DATABASE_URI=f"sqlite:///{database}"))
    with app.app_context():
        db.create_all()
        ctx = runtime.context(app)
        patron = Patron(card_number="23000001", first_name="Reader", last_name="Example",
                        email="reader@example.org", address_key=ctx.address_key("reader@example.org"),
                        created_at=NOW, updated_at=NOW)
        db.session.add(patron)
        db.session.commit()
        patron_id = patron.id
        meanwhile: list[str] = []
        read_policy_versions = decisions._policy_versions  # read after the decisions in force

        def another_writer_meanwhile(session):
            other = sqlite3.connect(database, timeout=0.1)
            try:
                other.execute("UPDATE patrons SET first_name = 'Changed' WHERE id = ?", (patron_id,))
                other.commit()
                meanwhile.append("written")
            except sqlite3.OperationalError as error:
                meanwhile.append(str(error))
            finally:
                other.close()
            return read_policy_versions(session)

        monkeypatch.setattr(decisions, "_policy_versions", another_writer_meanwhile)
        record_decision(db.session, ctx, DecisionRequest(
            purpose="email_marketing", decision=Decision.OPT_OUT, source=Source.PREFERENCE_CENTER,
            actor=Actor.PATRON, patron=db.session.get(Patron, patron_id), occurred_at=NOW),
            now=NOW)
        db.session.commit()
        assert meanwhile == ["database is locked"]
        assert verify_ledger(db.session).intact


def test_a_writer_waits_for_the_other_processes_turn_and_goes_as_soon_as_it_is_given_back(
        tmp_path: Path):
    """Another process holds the turn for 0.3 s: this one's first write waits for it (no "database
    is locked" though the busy timeout is far shorter than SQLite's backoff would need), and starts
    within a few milliseconds of its release."""
    database = tmp_path / "turns.sqlite3"
    setup = sqlite3.connect(database)
    setup.execute("CREATE TABLE t (x)")
    setup.close()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(database)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"

    app = _app(app_config(tmp_path, SQLALCHEMY_DATABASE_URI=f"sqlite:///{database}",
                          SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"timeout": 2.0}}))
    with app.app_context(), db.engine.begin() as connection:
        started = time.monotonic()
        connection.exec_driver_sql("INSERT INTO t VALUES (1)")
        waited = time.monotonic() - started
    released_at = float(holder.communicate(timeout=10)[0].strip())

    assert 0.2 < waited < 1.5
    assert time.time() - released_at < 1.0
    with sqlite3.connect(database) as check:
        assert check.execute("SELECT x FROM t").fetchall() == [(1,)]


HOLDER = """
import sys, time
from consent_service import sqlite_writer
turn = sqlite_writer.writer_turn(sys.argv[1])
turn.acquire(1.0)
print("holding", flush=True)
time.sleep(0.3)
turn.release()
print(time.time(), flush=True)
"""


def test_a_writer_that_cannot_have_the_turn_within_its_busy_timeout_is_told_the_database_is_locked(
        tmp_path: Path):
    database = tmp_path / "locked.sqlite3"
    other = WriterTurn(str(database.resolve()))  # as another process's turn: a file lock of its own
    other.acquire(1.0)
    try:
        turn = writer_turn(str(database))
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            turn.acquire(0.1)
        assert 0.09 < time.monotonic() - started < 1.0
        # the failed wait gave the thread's share back: once the other lets go, the turn is free
    finally:
        other.release()
    turn.acquire(0.1)
    turn.release()


def test_threads_of_one_process_take_turns_too(tmp_path: Path):
    database = tmp_path / "threads.sqlite3"
    turn = writer_turn(str(database))
    inside = []
    overlaps = []

    def write(n: int) -> None:
        for _ in range(20):
            turn.acquire(5.0)
            try:
                if inside:
                    overlaps.append(n)
                inside.append(n)
                time.sleep(0.0005)
                inside.remove(n)
            finally:
                turn.release()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == []


def _app(config):
    from consent_service import create_app

    return create_app(config)
