"""`POST /webhooks/sendgrid`: SendGrid's signed Event Webhook. Verified, stored, then processed."""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import Blueprint, current_app, jsonify, request
from flask.wrappers import Response
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES

from consent_service import runtime
from consent_service.extensions import csrf, db
from consent_service.sendgrid.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookBodyError,
    WebhookKeyError,
    WebhookSignatureError,
    WebhookVerifier,
    parse_batch,
)
from consent_service.services.sendgrid_webhook import process_batch, store_batch

logger = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")
csrf.exempt(bp)  # SendGrid signs its batches; it cannot send a CSRF token


@bp.post("/sendgrid")
def sendgrid_events() -> tuple[Response, int]:
    """Take a batch of SendGrid events.

    :raise 503: no verification key is configured (and verification is not switched off), or the
        batch could not be stored: SendGrid retries for 24 hours.
    :raise 413: the body is over SENDGRID_WEBHOOK_MAX_BYTES.
    :raise 403: unsigned, wrongly signed, signed more than SENDGRID_WEBHOOK_MAX_AGE seconds ago or
        in the future; nothing is stored.
    :raise 400: the body is not a JSON array.
    The batch is stored and committed before the 200 answer, then processed in its own transaction;
    if processing fails the batch stays stored for the worker, and the answer is still 200. A
    malformed event inside a good batch does not fail it: it is counted `invalid`, kept in the
    batch record with its reason, and the others are applied.
    """
    config = current_app.config
    now = runtime.now()
    verifier = None
    if config["SENDGRID_WEBHOOK_VERIFY"]:
        try:
            verifier = _verifier()
        except WebhookKeyError as error:
            logger.error("SendGrid webhook refused: %s", error)
            return _refusal(503, "webhook verification is not configured")

    limit = int(config["SENDGRID_WEBHOOK_MAX_BYTES"])
    if request.content_length is not None and request.content_length > limit:
        return _refusal(413, f"batches are limited to {limit} bytes")
    # A body sent without a length (chunked) is read up to one byte past the limit: werkzeug stops
    # quietly at `max_content_length`, so reading up to the limit itself would hand on a body cut
    # short (refused as wrongly signed) instead of telling the sender it is too large.
    request.max_content_length = limit + 1
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:
        return _refusal(413, f"batches are limited to {limit} bytes")
    if len(body) > limit:
        return _refusal(413, f"batches are limited to {limit} bytes")

    signed = None
    if verifier is not None:
        try:
            signed = verifier.verify(
                body, request.headers.get(SIGNATURE_HEADER), request.headers.get(TIMESTAMP_HEADER),
                now=now, max_age=timedelta(seconds=int(config["SENDGRID_WEBHOOK_MAX_AGE"])))
        except WebhookSignatureError as error:
            logger.warning("SendGrid webhook refused: %s", error)
            return _refusal(403, "the batch is not signed by SendGrid, or not recently")
    try:
        events = parse_batch(body)
    except WebhookBodyError as error:
        return _refusal(400, str(error))

    try:
        batch_id = store_batch(db.session, body, event_count=len(events),
                               signed_at=signed.signed_at if signed else None, now=now)
    except SQLAlchemyError as error:
        db.session.rollback()
        logger.error("SendGrid webhook: the batch could not be stored: %s", type(error).__name__)
        return _refusal(503, "the batch could not be stored; send it again later")
    age = f"signed {int(signed.age.total_seconds())} s ago" if signed else "unsigned"
    logger.info("SendGrid batch %d stored: %d event(s), %s", batch_id, len(events), age)

    try:
        outcome = process_batch(db.session, runtime.context(), batch_id, now=now, events=events)
    except SQLAlchemyError as error:  # even recording the failure failed: the worker retries
        db.session.rollback()
        logger.error("SendGrid batch %d: left for the worker: %s", batch_id, type(error).__name__)
        outcome = None
    processed = outcome is not None and outcome.processed
    return jsonify(batch=batch_id, events=len(events), processed=processed), 200


def _verifier() -> WebhookVerifier:
    """The verifier for the configured key, built once per key."""
    key = current_app.config["SENDGRID_WEBHOOK_PUBLIC_KEY"] or ""
    cached = current_app.extensions.get("sendgrid_webhook_verifier")
    if cached is None or cached[0] != key:
        if not key.strip():
            raise WebhookKeyError("CONSENT_SENDGRID_WEBHOOK_PUBLIC_KEY is not set")
        cached = (key, WebhookVerifier(key))
        current_app.extensions["sendgrid_webhook_verifier"] = cached
    verifier: WebhookVerifier = cached[1]
    return verifier


def _refusal(code: int, message: str) -> tuple[Response, int]:
    """The JSON answer the app's error handler gives machines, with our own message."""
    return jsonify(code=code, status=HTTP_STATUS_CODES[code], message=message), code
