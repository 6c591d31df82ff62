"""`policy notify`: the change notice goes once to every patron who can be told, in their
language, whatever their marketing choices; never to an inactive patron, a child under 13, a
patron without an address, an address that bounced or one reported as spam; a run stopped
midway (an exception, or kill -9) and run again sends each patron exactly one; the outbox sends
at the configured rate."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import date, timedelta

import pytest
from sqlalchemy import func, insert, select

from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.models import (
    AddressSuppression,
    OutboxMessage,
    Patron,
    PolicyNotice,
    PolicyVersion,
    UndeliverableAddress,
)
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.policies import notify_policy
from tests.conftest import NOW, POSTGRES_URL
from tests.integration.public_pages import sent_mail


@pytest.fixture
def app(app_factory, clock):
    return app_factory(CLOCK=clock, MAIL_DISPATCH="worker")


@pytest.fixture
def policy(session):
    version = PolicyVersion(version="2026-07", effective_at=NOW + timedelta(days=30),
                            summary="We keep truncated IP addresses for 90 days, not a year.",
                            summaries={"es": "Guardamos las direcciones IP 90 días, no un año."},
                            material=True, created_at=NOW)
    session.add(version)
    session.commit()
    return version


@pytest.fixture
def town(session, ctx, make_patron):
    """Patrons of every kind, by first name; `told` are those a notice must reach."""
    people = {
        "ana": make_patron(first_name="Ana", email="ana@example.org"),
        "ari": make_patron(first_name="Ari", email="ana@example.org"),  # same household address
        "bo": make_patron(first_name="Bo", email=None),
        "cy": make_patron(first_name="Cy", email="cy@example.org", status="inactive"),
        "kid": make_patron(first_name="Kid", email="ana@example.org", birth_date=date(2018, 3, 1)),
        "teen": make_patron(first_name="Teen", email="teen@example.org",
                            birth_date=date(2012, 3, 1)),
        "dee": make_patron(first_name="Dee", email="dee@example.org"),
        "eve": make_patron(first_name="Eve", email="eve@example.org"),
        "fay": make_patron(first_name="Fay", email="fay@example.org"),
        "sol": make_patron(first_name="Sol", email="sol@example.org", preferred_language="es"),
    }
    session.add(UndeliverableAddress(address_key=people["dee"].address_key, reason="bounce",
                                     occurred_at=NOW - timedelta(days=3)))
    session.add(AddressSuppression(address_key=people["eve"].address_key, reason="spamreport",
                                   suppressed_at=NOW - timedelta(days=3)))
    session.add(AddressSuppression(address_key=people["fay"].address_key, reason="spamreport",
                                   suppressed_at=NOW - timedelta(days=9),
                                   lifted_at=NOW - timedelta(days=2)))
    # a marketing opt-out does not stop a notice
    record_decision(session, ctx, DecisionRequest(
        purpose="email_marketing", decision=Decision.OPT_OUT, source=Source.UNSUBSCRIBE_LINK,
        actor=Actor.PATRON, occurred_at=NOW - timedelta(days=1), patron=people["ana"]), now=NOW)
    session.commit()
    return people


TOLD = {"ana", "ari", "teen", "fay", "sol"}
SKIPPED = ("5 patron(s) skipped (address_suppressed 1, address_undeliverable 1, "
           "child_under_13 1, inactive 1, no_email 1)")


def notices(session):
    """Patron first name -> how many notices were queued for them."""
    session.expire_all()
    rows = session.execute(select(Patron.first_name).join(
        OutboxMessage, OutboxMessage.patron_id == Patron.id).where(
        OutboxMessage.template == "policy_notice"))
    return Counter(name.lower() for (name,) in rows)


def test_notify_queues_one_notice_per_patron_who_can_be_told_and_says_who_was_skipped(
        runner, session, town, policy):
    result = runner.invoke(args=["policy", "notify", "2026-07", "--rate", "10/second"])

    assert result.exit_code == 0, result.output
    assert result.output == (
        f"policy 2026-07: 5 notice(s) queued, {SKIPPED}; the outbox sends the last at "
        f"{(NOW + timedelta(seconds=0.4)).isoformat()}\n")  # no progress bar when not a terminal
    assert notices(session) == Counter(dict.fromkeys(TOLD, 1))
    assert session.scalar(select(func.count()).select_from(PolicyNotice)) == 5
    messages = session.scalars(select(OutboxMessage).where(
        OutboxMessage.template == "policy_notice").order_by(OutboxMessage.id)).all()
    assert {m.category for m in messages} == {"notice"}
    assert all("List-Unsubscribe" not in m.headers for m in messages)


def test_a_notice_is_in_the_patrons_language_and_says_what_changes(runner, session, town, policy):
    runner.invoke(args=["policy", "notify", "2026-07"])
    by_patron = {m.patron_id: m for m in session.scalars(select(OutboxMessage))}
    spanish, english = by_patron[town["sol"].id], by_patron[town["ana"].id]

    assert spanish.subject == "Nuestra política de privacidad cambia el 1 de julio de 2026"
    assert "Hola, Sol:" in spanish.text_body
    assert "Guardamos las direcciones IP 90 días, no un año." in spanish.text_body
    assert english.subject == "Our privacy policy changes on July 1, 2026"
    assert "Hello Ana," in english.text_body
    assert "We keep truncated IP addresses for 90 days, not a year." in english.text_body
    assert "https://library.example.org/privacy" in english.text_body
    assert "/preferences/" in english.text_body  # to see choices and download their data


def test_a_run_interrupted_midway_and_run_again_tells_each_patron_exactly_once(
        runner, session, ctx, town, policy):
    looked_at = 0

    def stop_after_seven() -> None:
        nonlocal looked_at
        looked_at += 1
        if looked_at == 7:
            raise KeyboardInterrupt  # Ctrl-C in the third batch of three

    with pytest.raises(KeyboardInterrupt):
        notify_policy(session, ctx, "2026-07", now=NOW, rate=10, batch=3,
                      on_patron=stop_after_seven)
    session.rollback()
    first = notices(session)
    assert set(first) == {"ana", "ari", "teen"}  # the two finished batches, mail and record alike
    assert session.scalar(select(func.count()).select_from(PolicyNotice)) == 3

    result = runner.invoke(args=["policy", "notify", "2026-07", "--batch-size", "3"])

    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        "policy 2026-07: 2 notice(s) queued, 8 patron(s) skipped (address_suppressed 1, "
        "address_undeliverable 1, already_notified 3, child_under_13 1, inactive 1, no_email 1)")
    assert notices(session) == Counter(dict.fromkeys(TOLD, 1))
    again = runner.invoke(args=["policy", "notify", "2026-07"])
    assert "0 notice(s) queued" in again.output
    assert notices(session) == Counter(dict.fromkeys(TOLD, 1))


def test_the_outbox_sends_notices_no_faster_than_the_rate(app, runner, clock, session, ctx, town,
                                                         policy):
    runner.invoke(args=["policy", "notify", "2026-07", "--rate", "30/minute"])

    due = sorted(m.available_at for m in session.scalars(select(OutboxMessage)))
    assert [(at - NOW).total_seconds() for at in due] == [0, 2, 4, 6, 8]
    runner.invoke(args=["worker", "--once"])
    assert len(sent_mail(app)) == 1  # only the first is due now
    clock.at = NOW + timedelta(seconds=4)
    runner.invoke(args=["worker", "--once"])
    assert len(sent_mail(app)) == 3
    # a second run (say, after new patrons were imported) queues behind the notices still waiting
    late = Patron(card_number="L1", first_name="Lee", email="lee@example.org",
                  address_key=ctx.address_key("lee@example.org"), created_at=NOW, updated_at=NOW)
    session.add(late)
    session.commit()
    runner.invoke(args=["policy", "notify", "2026-07", "--rate", "30/minute"])
    latest = session.scalar(select(OutboxMessage.available_at).where(
        OutboxMessage.patron_id == late.id))
    assert (latest - NOW).total_seconds() == 10


@pytest.mark.parametrize(("args", "line"), [
    (["2027-01"], "Error: no policy version '2027-01'; the versions are: 2026-05, 2026-07\n"),
    (["2026-05"], "Error: policy 2026-05 is not a material change, so it is not announced by "
                  "email; use --force to send the notice anyway\n"),
    (["2026-07", "--rate", "fast"],
     "Error: a notice rate is like '10/second' or '300/minute', not 'fast'\n"),
    (["2026-07", "--rate", "0/second"],
     "Error: a notice rate is like '10/second' or '300/minute', not '0/second'\n"),
])
def test_notify_refuses_with_one_line_and_queues_nothing(runner, session, town, policy, args,
                                                         line):
    session.add(PolicyVersion(version="2026-05", effective_at=NOW - timedelta(days=10),
                              summary="Typos.", material=False, created_at=NOW))
    session.commit()
    result = runner.invoke(args=["policy", "notify", *args])
    assert result.exit_code == 1
    assert result.output == line
    assert notices(session) == Counter()


def test_force_announces_a_version_that_is_not_material(runner, session, town):
    session.add(PolicyVersion(version="2026-05", effective_at=NOW - timedelta(days=10),
                              summary="Typos.", material=False, created_at=NOW))
    session.commit()
    result = runner.invoke(args=["policy", "notify", "2026-05", "--force"])
    assert result.exit_code == 0
    assert set(notices(session)) == TOLD
    message = session.scalar(select(OutboxMessage).where(OutboxMessage.patron_id == town["ana"].id))
    assert message.subject == "Our privacy policy has changed"  # in force already


def test_the_rate_setting_is_the_default(app, runner, session, town, policy):
    app.config["POLICY_NOTICE_RATE"] = "2 per second"
    runner.invoke(args=["policy", "notify", "2026-07"])
    due = sorted((m.available_at - NOW).total_seconds() for m in session.scalars(
        select(OutboxMessage)))
    assert due == [0, 0.5, 1, 1.5, 2]


def test_a_rate_setting_that_is_not_a_rate_stops_the_service_from_starting(tmp_path):
    from consent_service import create_app
    from consent_service.config import UnsafeConfigError
    from tests.conftest import app_config

    with pytest.raises(UnsafeConfigError) as refused:
        create_app(app_config(tmp_path, POLICY_NOTICE_RATE="lots"))
    assert str(refused.value) == ("CONSENT_POLICY_NOTICE_RATE: a notice rate is like "
                                  "'10/second' or '300/minute', not 'lots'")


def test_a_run_killed_with_sigkill_and_run_again_tells_each_patron_exactly_once(
        app_factory, tmp_path):
    """The real thing: `flask policy notify` in its own process, killed with SIGKILL midway
    (no cleanup runs), then run again."""
    url = POSTGRES_URL or f"sqlite:///{tmp_path / 'notify.sqlite3'}"
    app = app_factory(**({} if POSTGRES_URL else {"SQLALCHEMY_DATABASE_URI": url}),
                      MAIL_DISPATCH="worker")
    total = 1500
    from consent_service import runtime
    from consent_service.extensions import db

    with app.app_context():
        ctx = runtime.context(app)
        db.session.add(PolicyVersion(version="2026-07", effective_at=NOW, summary="Changes.",
                                     material=True, created_at=NOW))
        db.session.execute(insert(Patron), [
            {"card_number": f"K{n:05d}", "public_id": f"p_kill{n:05d}", "first_name": f"P{n}",
             "email": f"p{n}@example.org", "address_key": ctx.address_key(f"p{n}@example.org"),
             "created_at": NOW, "updated_at": NOW} for n in range(total)])
        db.session.commit()

    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env.update(CONSENT_DATABASE_URL=url, CONSENT_SECRET_KEY="test-secret-key",
               CONSENT_ADDRESS_HASH_KEY="test-address-hash-key", CONSENT_MAIL_DISPATCH="worker",
               CONSENT_MAIL_FILE_DIR=str(tmp_path / "mail"))
    command = [sys.executable, "-m", "flask", "--app", "consent_service", "policy", "notify",
               "2026-07", "--batch-size", "1"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)

    def told() -> int:
        with app.app_context():
            db.session.remove()
            return db.session.scalar(select(func.count()).select_from(PolicyNotice)) or 0

    deadline = time.monotonic() + 60
    try:
        while told() < 20 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    at_kill = told()
    assert 20 <= at_kill < total, "the run was not stopped midway"

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300,
                           check=False)

    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"policy 2026-07: {total - at_kill} notice(s) queued, "
                                   f"{at_kill} patron(s) skipped (already_notified {at_kill})")
    with app.app_context():
        db.session.remove()
        per_patron = Counter(db.session.scalars(select(OutboxMessage.patron_id).where(
            OutboxMessage.template == "policy_notice")))
        assert len(per_patron) == total and set(per_patron.values()) == {1}
        assert db.session.scalar(select(func.count()).select_from(PolicyNotice)) == total
    if not POSTGRES_URL:  # the file is the database the process wrote: nothing half-written
        with sqlite3.connect(tmp_path / "notify.sqlite3") as raw:
            assert raw.execute("pragma integrity_check").fetchone() == ("ok",)
