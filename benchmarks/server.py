"""The service as gunicorn runs it (`wsgi:app`), plus the baselines' routes on the same server:

- `GET|POST /bench/hello`: "hello world", the floor for one-click and the eligibility API;
- `POST /bench/webhook`: a minimal SendGrid endpoint that verifies the signature with the same
  verifier, parses the JSON and inserts the actionable events with one `executemany`.

    gunicorn --workers 2 benchmarks.server:app     (with the CONSENT_* variables set)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import Response, request

from consent_service import create_app
from consent_service.extensions import csrf, db
from consent_service.sendgrid.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookSignatureError,
    WebhookVerifier,
    parse_batch,
)

ACTIONABLE = frozenset({"unsubscribe", "group_unsubscribe", "group_resubscribe", "spamreport",
                        "bounce", "dropped"})

app = create_app()
_verifier = WebhookVerifier(app.config["SENDGRID_WEBHOOK_PUBLIC_KEY"])


@csrf.exempt
def hello() -> Response:
    return Response("hello world", mimetype="text/plain")


@csrf.exempt
def webhook_baseline() -> Response:
    body = request.get_data()
    try:
        _verifier.verify(body, request.headers.get(SIGNATURE_HEADER),
                         request.headers.get(TIMESTAMP_HEADER), now=datetime.now(UTC),
                         max_age=timedelta(seconds=app.config["SENDGRID_WEBHOOK_MAX_AGE"]))
    except WebhookSignatureError:
        return Response("forbidden", status=403)
    rows = [(e.get("sg_event_id"), e.get("email"), e.get("event"),
             datetime.fromtimestamp(e["timestamp"], UTC).replace(tzinfo=None), e.get("asm_group_id"))
            for e in parse_batch(body) if isinstance(e, dict) and e.get("event") in ACTIONABLE]
    connection = db.engine.raw_connection()
    try:
        cursor = connection.cursor()
        mark = "?" if db.engine.dialect.name == "sqlite" else "%s"
        cursor.executemany("INSERT INTO bench_webhook_events (sg_event_id, email, event, "
                           f"occurred_at, asm_group_id) VALUES ({', '.join([mark] * 5)})", rows)
        connection.commit()
    finally:
        connection.close()
    return Response("ok", mimetype="text/plain")


app.add_url_rule("/bench/hello", "bench_hello", hello, methods=["GET", "POST"])
app.add_url_rule("/bench/webhook", "bench_webhook", webhook_baseline, methods=["POST"])
