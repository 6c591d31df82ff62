"""Throughput of `POST /webhooks/sendgrid`: signed batches through the real endpoint, against baselines.

    .venv/bin/python benchmarks/webhook_benchmark.py --batches 100 --events 1000 --repeat 3

Generates `--batches` batches of `--events` events shaped as SendGrid sends them, `--actionable`
(10% by default) of them acting on the ledger (unsubscribes, group unsubscribes and resubscribes,
spam reports, hard bounces), the rest opens, clicks, deliveries and the like; half carry the
`patron_id` custom arg of a patron at that address. Each batch is signed with a fresh ECDSA P-256
key whose public half the app is configured with, so verification is on, as in production.

Each repetition starts from a fresh database (SQLite in a temporary directory, or `--database-url`,
whose tables are dropped) holding `--patrons` patrons and four topics mapped to groups, then POSTs
every batch through Flask's test client (the full WSGI stack: CSRF, verification, storage with its
commit, processing in its own transaction). In the same run, two baselines over the same bodies:

- `verify+parse`: the endpoint's signature check and JSON parsing alone, in-process, per batch;
- `http floor`: the same POSTs to `/healthz`, which refuses them (405): what the test client and
  WSGI cost for these bodies before any of our code runs.

Prints the median events per second of each and the ratios.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SEED = 2026
GROUPS = {"events": 101, "kids_teens": 102, "adult_learning": 103, "library_news": 104}
SKIPPED_KINDS = ("processed", "delivered", "open", "open", "click", "deferred")
ACTION_KINDS = ("unsubscribe", "group_unsubscribe", "group_unsubscribe", "group_resubscribe",
                "spamreport", "bounce")


class Signer:
    """Signs batches as SendGrid does: ECDSA P-256 / SHA-256 over timestamp + raw body."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        der = self._key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        self.public_key_base64 = base64.b64encode(der).decode("ascii")

    def headers(self, body: bytes, timestamp: str) -> dict[str, str]:
        signature = self._key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
                "X-Twilio-Email-Event-Webhook-Timestamp": timestamp}


def generate_batches(rng: random.Random, *, batches: int, events: int, actionable: float,
                     patrons: list[tuple[str, str]], addresses: int) -> list[bytes]:
    """The batch bodies, compact JSON as SendGrid sends them."""
    bodies = []
    sequence = 0
    for _ in range(batches):
        batch: list[dict[str, Any]] = []
        for _ in range(events):
            sequence += 1
            if rng.random() < 0.5:
                public_id, email = patrons[rng.randrange(len(patrons))]
                extra: dict[str, Any] = {"patron_id": public_id}
            else:
                email, extra = f"reader{rng.randrange(addresses)}@example.org", {}
            when = NOW - timedelta(seconds=rng.randrange(24 * 3600))
            kinds = ACTION_KINDS if rng.random() < actionable else SKIPPED_KINDS
            kind = rng.choice(kinds)
            event = {"email": email, "timestamp": int(when.timestamp()), "event": kind,
                     "sg_event_id": f"ev{sequence:09d}",
                     "sg_message_id": f"msg{sequence // 3:08d}.filter0001",
                     "smtp-id": f"<{sequence}@ismtpd-555>", "category": ["library"], **extra}
            if kind.startswith("group_"):
                event["asm_group_id"] = rng.choice(list(GROUPS.values()))
            if kind == "bounce":
                event.update(type="bounce", reason="550 5.1.1 unknown user", status="5.1.1")
            if kind in ("open", "click"):
                event.update(useragent="Mozilla/5.0", ip="192.0.2.1")
            batch.append(event)
        bodies.append(json.dumps(batch, separators=(",", ":")).encode("utf-8"))
    return bodies


def make_app(database_url: str, public_key: str) -> Any:
    from consent_service import create_app
    from consent_service.extensions import db

    app = create_app({
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SECRET_KEY": "benchmark-secret-key-0123456789abcdef",
        "ADDRESS_HASH_KEY": "benchmark-address-hash-key-0123456789",
        "PUBLIC_BASE_URL": "https://consent.example.org",
        "MAIL_BACKEND": "memory",
        "SENDGRID_WEBHOOK_PUBLIC_KEY": public_key,
        "CLOCK": lambda: NOW,
    })
    with app.app_context():
        db.drop_all()
        db.create_all()
    return app


def seed(app: Any, patrons: list[tuple[str, str]]) -> None:
    from consent_service import runtime
    from consent_service.extensions import db
    from consent_service.models import Patron, Topic

    with app.app_context():
        ctx = runtime.context(app)
        for key, group in GROUPS.items():
            db.session.add(Topic(key=key, name=key, sendgrid_group_id=group, created_at=NOW))
        for number, (public_id, email) in enumerate(patrons):
            db.session.add(Patron(card_number=f"2100{number:07d}", public_id=public_id,
                                  email=email, address_key=ctx.address_key(email),
                                  created_at=NOW, updated_at=NOW))
        db.session.commit()


def timed(run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--events", type=int, default=1000, help="events per batch")
    parser.add_argument("--actionable", type=float, default=0.10)
    parser.add_argument("--patrons", type=int, default=5000)
    parser.add_argument("--addresses", type=int, default=50_000, help="other addresses in use")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", default="",
                        help="default: a fresh SQLite file per run; its tables are dropped")
    args = parser.parse_args()

    from consent_service.sendgrid.webhook import WebhookVerifier, parse_batch

    rng = random.Random(SEED)
    signer = Signer()
    patrons = [(f"p_bench{n:07d}", f"patron{n}@example.org") for n in range(args.patrons)]
    bodies = generate_batches(rng, batches=args.batches, events=args.events,
                              actionable=args.actionable, patrons=patrons,
                              addresses=args.addresses)
    stamp = str(int(NOW.timestamp()))
    signed = [(body, signer.headers(body, stamp)) for body in bodies]
    total = args.batches * args.events
    print(f"{args.batches} batches x {args.events} events ({total} events, "
          f"{args.actionable:.0%} actionable, {sum(len(b) for b in bodies) / 1e6:.1f} MB), "
          f"{args.patrons} patrons, repeat {args.repeat}", flush=True)

    full, verify_only, floor = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        for run in range(args.repeat):
            url = args.database_url or f"sqlite:///{Path(folder) / f'run{run}.sqlite3'}"
            app = make_app(url, signer.public_key_base64)
            seed(app, patrons)
            client = app.test_client()

            def post_all(path: str, expected: int, client: Any = client) -> None:
                for body, headers in signed:
                    response = client.post(path, data=body, headers=headers,
                                           content_type="application/json")
                    if response.status_code != expected:
                        raise SystemExit(f"{path}: HTTP {response.status_code}: "
                                         f"{response.get_data(as_text=True)[:200]}")

            verifier = WebhookVerifier(signer.public_key_base64)

            def verify_and_parse(verifier: WebhookVerifier = verifier) -> None:
                for body, headers in signed:
                    verifier.verify(body, headers["X-Twilio-Email-Event-Webhook-Signature"],
                                    headers["X-Twilio-Email-Event-Webhook-Timestamp"], now=NOW,
                                    max_age=timedelta(hours=26))
                    parse_batch(body)

            floor.append(timed(lambda post_all=post_all: post_all("/healthz", 405)))
            verify_only.append(timed(verify_and_parse))
            full.append(timed(lambda post_all=post_all: post_all("/webhooks/sendgrid", 200)))
            print(f"run {run + 1}: endpoint {total / full[-1]:,.0f} ev/s, verify+parse "
                  f"{total / verify_only[-1]:,.0f} ev/s, http floor {total / floor[-1]:,.0f} ev/s",
                  flush=True)
            _check(app, args.batches)

    medians = {name: total / statistics.median(times) for name, times in
               (("endpoint", full), ("verify+parse", verify_only), ("http floor", floor))}
    print("median events per second:")
    for name, rate in medians.items():
        print(f"  {name:<14}{rate:>12,.0f}")
    print(f"endpoint / verify+parse: {medians['endpoint'] / medians['verify+parse']:.3f}; "
          f"endpoint / http floor: {medians['endpoint'] / medians['http floor']:.3f}")


def _check(app: Any, batches: int) -> None:
    """Every batch was stored and processed (a benchmark of failures would be no benchmark)."""
    from sqlalchemy import func, select

    from consent_service.extensions import db
    from consent_service.models import WebhookBatch

    with app.app_context():
        processed = db.session.scalar(select(func.count()).select_from(WebhookBatch)
                                      .where(WebhookBatch.status == "processed"))
        db.session.remove()
        db.engine.dispose()
    if processed != batches:
        raise SystemExit(f"only {processed} of {batches} batches were processed")


if __name__ == "__main__":
    main()
