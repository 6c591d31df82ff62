"""The fault suite's workload and its yardstick: a day of patron clicks, SendGrid batches and mail
requests, the worker draining what they queued, and the final state in a form that a run with faults
must match exactly (ledger, projections, outbox, suppression jobs, the fake SendGrid's lists and mail).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from flask import Flask, request_finished
from flask.testing import FlaskClient
from sqlalchemy import select, text

from consent_service import runtime
from consent_service.delivery.worker import run_worker, worker_tasks
from consent_service.domain.tokens import LinkKind
from consent_service.extensions import db
from consent_service.models import (
    AddressDecision,
    ConsentEvent,
    OutboxMessage,
    Patron,
    PatronDecision,
    SuppressionSyncJob,
    Topic,
    WebhookBatch,
)
from tests.conftest import NOW, POSTGRES_URL, Clock
from tests.fakes.sendgrid_api import FakeSendGrid, WebhookSigner
from tests.integration.public_pages import csrf_token
from tests.integration.sendgrid_fixtures import (
    API_KEY,
    EVENTS_GROUP,
    NEWS_GROUP,
    batch_bytes,
    sendgrid_event,
)

# The suite's figures for docs/RELIABILITY.md, printed at the end of the run (conftest.py).
FIGURES: Counter[str] = Counter()
PATRONS = 10  # readers 0-9; readers 8 and 9 share one address
ROUND = timedelta(minutes=30)  # the clock moves this far between worker rounds (past any backoff)
MAX_ROUNDS = 40


def scenario_config(fake: FakeSendGrid, signer: WebhookSigner, clock: Clock,
                    **overrides: Any) -> dict[str, Any]:
    """The app's settings for a run: mail through SendGrid (the fake), sent by the worker, a short
    SendGrid timeout so that a slow answer counts as a failure quickly."""
    config: dict[str, Any] = dict(
        MAIL_BACKEND="sendgrid", MAIL_DISPATCH="worker", SENDGRID_API_KEY=API_KEY,
        SENDGRID_API_HOST=fake.url, SENDGRID_API_TIMEOUT=0.5,
        SENDGRID_WEBHOOK_PUBLIC_KEY=signer.public_key_base64, CLOCK=clock)
    config.update(overrides)
    return config


def email_of(n: int) -> str:
    return "family@example.org" if n >= 8 else f"reader{n}@example.org"


def seed(app: Flask, fake: FakeSendGrid) -> None:
    """Topics mapped to SendGrid groups, ten adult patrons, and what SendGrid already holds: two
    addresses in the events group whose resubscribe the workload brings."""
    fake.add_group(EVENTS_GROUP, "Events")
    fake.add_group(NEWS_GROUP, "Library news")
    with app.app_context():
        ctx = runtime.context(app)
        for key, group in (("events", EVENTS_GROUP), ("news", NEWS_GROUP)):
            db.session.add(Topic(key=key, name=key.title(), sendgrid_group_id=group,
                                 created_at=NOW - timedelta(days=30)))
        for n in range(PATRONS):
            db.session.add(Patron(
                card_number=f"21000000{n:02d}", first_name=f"Reader{n}", last_name="Example",
                email=email_of(n), address_key=ctx.address_key(email_of(n)),
                birth_date=date(1980, 5, 17), created_at=NOW - timedelta(days=30),
                updated_at=NOW - timedelta(days=30)))
        db.session.commit()
    for n in (3, 7):
        fake.add_group_suppression(EVENTS_GROUP, email_of(n), int((NOW - timedelta(days=2))
                                                                  .timestamp()))


@dataclass
class Answers:
    """Every HTTP status the workload's requests got, by kind of request."""

    statuses: Counter[tuple[str, int]]

    def not_ok(self) -> list[tuple[str, int]]:
        return sorted(key for key in self.statuses if key[1] != 200)


def workload_batches() -> list[bytes]:
    """SendGrid's Event Webhook batches: group unsubscribes and resubscribes, a global unsubscribe,
    a spam report, and a batch that repeats an event already sent."""
    at = NOW - timedelta(minutes=20)
    first = [
        sendgrid_event("group_unsubscribe", email_of(2), at, asm_group_id=NEWS_GROUP,
                       sg_event_id="ev-2-news"),
        sendgrid_event("group_resubscribe", email_of(3), at, asm_group_id=EVENTS_GROUP,
                       sg_event_id="ev-3-events"),
        sendgrid_event("unsubscribe", email_of(6), at, sg_event_id="ev-6-all"),
    ]
    second = [
        sendgrid_event("group_resubscribe", email_of(7), at, asm_group_id=EVENTS_GROUP,
                       sg_event_id="ev-7-events"),
        sendgrid_event("spamreport", email_of(5), at, sg_event_id="ev-5-spam"),
        sendgrid_event("delivered", email_of(4), at, sg_event_id="ev-4-delivered"),
    ]
    repeat = [first[0], second[1]]
    return [batch_bytes(first), batch_bytes(second), batch_bytes(repeat)]


def post_batch(client: FlaskClient, signer: WebhookSigner, body: bytes) -> Any:
    headers = signer.headers(body, str(int(NOW.timestamp())))
    return client.post("/webhooks/sendgrid", data=body, headers=headers,
                       content_type="application/json")


def run_workload(app: Flask, signer: WebhookSigner, *,
                 send: Callable[[Callable[[], Any]], int] | None = None) -> Answers:
    """The patrons' and SendGrid's requests, over HTTP: one-click unsubscribes (a topic, or all
    email), SendGrid batches, and "email me a link" for every address. `send` makes each request
    (a callable returning the response) and returns the status that counts: a test of a database
    outage sends again what was answered 503, as SendGrid and people do."""
    ctx = runtime.context(app)
    statuses: Counter[tuple[str, int]] = Counter()
    send = send or (lambda request: request().status_code)
    with app.app_context():
        patrons = {int(p.card_number[-2:]): p.public_id
                   for p in db.session.scalars(select(Patron))}
        db.session.rollback()
    mail_client = app.test_client(use_cookies=False)
    for n, topic in ((0, "events"), (1, None), (4, "news"), (8, None)):
        token = ctx.signer.sign(LinkKind.UNSUBSCRIBE, patrons[n], topic)
        status = send(lambda token=token: mail_client.post(
            f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}))
        statuses["one-click", status] += 1
    sendgrid = app.test_client(use_cookies=False)
    for body in workload_batches():
        statuses["webhook", send(lambda body=body: post_batch(sendgrid, signer, body))] += 1
    for address in sorted({email_of(n) for n in range(PATRONS)}):
        browser = app.test_client()

        def ask(address: str = address, browser: FlaskClient = browser) -> Any:
            page = browser.get("/preferences")
            if page.status_code != 200:
                return page
            return browser.post("/preferences", data={
                "csrf_token": csrf_token(page.text), "email": address})

        statuses["email me a link", send(ask)] += 1
    return Answers(statuses)


def settled(app: Flask) -> bool:
    """Nothing left for the worker: no mail, suppression job or webhook batch waiting."""
    with app.app_context():
        waiting = (
            db.session.scalar(select(OutboxMessage.id).where(OutboxMessage.status == "pending")
                              .limit(1)),
            db.session.scalar(select(SuppressionSyncJob.id).where(
                SuppressionSyncJob.status.in_(("pending", "sending"))).limit(1)),
            db.session.scalar(select(WebhookBatch.id).where(WebhookBatch.status != "processed")
                              .limit(1)),
        )
        db.session.rollback()
    return all(item is None for item in waiting)


def drain(app: Flask, clock: Clock, *, between_rounds: Callable[[int], None] | None = None) -> int:
    """Run the worker's own loop one round at a time, the clock moving ROUND after each, until
    nothing waits; returns the rounds it took. Bounded: the outbox must settle in MAX_ROUNDS."""
    tasks, _warnings = worker_tasks(app)
    for number in range(1, MAX_ROUNDS + 1):
        run_worker(app, tasks=tasks, idle_seconds=0, stop=lambda: False, max_rounds=1)
        if between_rounds is not None:
            between_rounds(number)
        if settled(app):
            return number
        clock.at += ROUND
    raise AssertionError(f"the outbox did not settle in {MAX_ROUNDS} rounds")


def final_state(app: Flask, fake: FakeSendGrid) -> dict[str, Any]:
    """What a run leaves, in terms that do not depend on timing: the ledger and both projections
    (by card number and address key), the outbox by template and recipient patron, the addresses
    whose suppression jobs all ended `done`, every webhook event's receipt, and on the fake: its
    global and group lists and the mail it accepted (subject and recipient, counted)."""
    with app.app_context():
        s = db.session
        card = {row.id: row.card_number for row in s.execute(select(Patron.id, Patron.card_number))}
        ledger = sorted(
            (card.get(e.patron_id or 0, "-"), e.address_key or "-", e.purpose, e.topic,
             e.decision, e.source, e.actor, e.occurred_at.isoformat(), e.effective,
             e.sg_event_id or "-")
            for e in s.scalars(select(ConsentEvent)))
        patron_decisions = sorted(
            (card[d.patron_id], d.purpose, d.topic, d.decision, d.occurred_at.isoformat())
            for d in s.scalars(select(PatronDecision)))
        address_decisions = sorted(
            (d.address_key, d.purpose, d.topic, d.decision, d.occurred_at.isoformat())
            for d in s.scalars(select(AddressDecision)))
        outbox = sorted((m.template, card.get(m.patron_id or 0, "-"), m.status, m.to_address or "")
                        for m in s.scalars(select(OutboxMessage)))
        jobs: dict[str, set[str]] = {}
        for job in s.scalars(select(SuppressionSyncJob)):
            jobs.setdefault(job.address_key, set()).add(job.status)
        batches = sorted((b.status, b.event_count, sorted((b.counts or {}).items()))
                         for b in s.scalars(select(WebhookBatch)))
        receipts = s.execute(text("select count(*) from sendgrid_event_receipts")).scalar_one()
        s.rollback()
    return {
        "ledger": ledger,
        "patron projection": patron_decisions,
        "address projection": address_decisions,
        "outbox": outbox,
        "suppression jobs": {address: sorted(statuses) for address, statuses in jobs.items()},
        "webhook batches": batches,
        "webhook receipts": receipts,
        "sendgrid global": sorted(fake.global_unsubscribes),
        "sendgrid groups": {group: sorted(emails)
                            for group, emails in fake.group_suppressions.items() if emails},
        "sendgrid mail": sorted(sent_mail(fake).items()),
    }


def sent_mail(fake: FakeSendGrid) -> Counter[tuple[str, str, str]]:
    """The mail the fake accepted: (recipient, subject, Message-ID) -> how many times."""
    return Counter((personalization["to"][0]["email"], mail["subject"],
                    personalization.get("headers", {}).get("Message-ID", ""))
                   for mail in fake.sent_mail for personalization in mail["personalizations"])


def suppression_writes(fake: FakeSendGrid) -> Counter[tuple[str, str]]:
    """Suppression changes the fake carried out, per (address, call): adds and removals."""
    counted: Counter[tuple[str, str]] = Counter()
    for request in fake.carried_out:
        if request.path.endswith("/search") or request.method not in ("POST", "DELETE"):
            continue
        if request.path.startswith("/v3/mail/"):
            continue
        call = f"{request.method} {request.path.split('/v3/')[1].rsplit('/', 1)[0]}" \
            if request.method == "DELETE" else f"POST {request.path.split('/v3/')[1]}"
        if request.method == "DELETE":
            counted[request.path.rsplit("/", 1)[1].replace("%40", "@"), call] += 1
        else:
            for email in request.json["recipient_emails"]:
                counted[email, call] += 1
    return counted


def empty_database(app: Flask) -> None:
    """Forget a run's rows: on SQLite each app has its own database in memory; PostgreSQL's is
    shared, so its tables are emptied (as the app_factory fixture does after a test)."""
    if not POSTGRES_URL:
        return
    with app.app_context():
        db.session.remove()
        tables = ", ".join(t.name for t in db.metadata.sorted_tables)
        with db.engine.begin() as connection:
            connection.execute(text(f"truncate {tables} restart identity cascade"))


@dataclass
class Run:
    """One run of the scenario: its final state, the fake it ran against (stopped), the answers its
    requests got and how many worker rounds it took."""

    state: dict[str, Any]
    fake: FakeSendGrid
    answers: Answers
    rounds: int


def run_scenario(app_factory: Callable[..., Flask], signer: WebhookSigner, *,
                 sendgrid_fault: Callable[[FakeSendGrid], None] | None = None,
                 send: Callable[[Callable[[], Any]], int] | None = None,
                 config: dict[str, Any] | None = None) -> Run:
    """Seed, run the workload (each request through `send`), inject `sendgrid_fault`, drain with the
    worker's loop, and read the final state; the database is emptied afterwards."""
    fake = FakeSendGrid(api_key=API_KEY).start()
    try:
        fake.clock = NOW.timestamp
        clock = Clock(NOW)
        app = app_factory(**scenario_config(fake, signer, clock, **(config or {})))
        count_answers(app)
        seed(app, fake)
        answers = run_workload(app, signer, send=send)
        if sendgrid_fault is not None:
            sendgrid_fault(fake)
        rounds = drain(app, clock, between_rounds=lambda _: (fake.slow(0), fake.wait_for_slowed()))
        fake.failure_rate(0)
        state = final_state(app, fake)
        empty_database(app)
    finally:
        fake.stop()
        count_sendgrid(fake)
    assert fake.violations == []
    return Run(state, fake, answers, rounds)


def count_answers(app: Flask) -> None:
    """Count every answer the app gives, by status, in FIGURES."""

    def answered(sender: Flask, response: Any, **extra: Any) -> None:
        FIGURES[f"answers {response.status_code}"] += 1

    request_finished.connect(answered, app, weak=False)


def count_sendgrid(fake: FakeSendGrid) -> None:
    """Add a fake's requests and injected faults to FIGURES."""
    FIGURES["SendGrid requests"] += len(fake.requests)
    for kind, number in fake.injected.items():
        FIGURES[f"SendGrid fault {kind}"] += number


_BASELINE: list[Run] = []


def baseline(app_factory: Callable[..., Flask], signer: WebhookSigner) -> Run:
    """The run without faults, made once per session (the workload is deterministic)."""
    if not _BASELINE:
        run = run_scenario(app_factory, signer)
        assert run.answers.not_ok() == [], run.answers.statuses
        _BASELINE.append(run)
    return _BASELINE[0]
