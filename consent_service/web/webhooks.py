"""`POST /webhooks/sendgrid`: SendGrid's signed Event Webhook. Verified, stored and applied."""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import Blueprint, current_app, jsonify, request
from flask.wrappers import Response
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES

from consent_service import runtime
from consent_service.domain import ConsentServiceError
from consent_service.extensions import csrf, db
from consent_service.services.sendgrid_webhook import BatchRefusedError, receive_batch
from consent_service.web.errors import ask_to_retry_soon

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
    The batch is stored and applied in one transaction, committed before the 200 answer; if
    applying fails the batch is committed alone for the worker, and the answer is still 200. A
    malformed event inside a good batch does not fail it: it is counted `invalid`, kept in the
    batch record with its reason, and the others are applied.
    """
    config = current_app.config
    try:
        verifier = runtime.webhook_verifier()
    except ConsentServiceError as error:  # verification is on, and the key is missing or wrong
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

    try:
        received = receive_batch(
            db.session, runtime.context(), body, request.headers, verifier=verifier,
            max_age=timedelta(seconds=int(config["SENDGRID_WEBHOOK_MAX_AGE"])), now=runtime.now())
    except BatchRefusedError as error:
        return _refusal(error.status, str(error))
    except SQLAlchemyError as error:
        db.session.rollback()
        logger.error("SendGrid webhook: the batch could not be stored: %s", type(error).__name__)
        ask_to_retry_soon()
        return _refusal(503, "the batch could not be stored; send it again later")
    return jsonify(batch=received.batch_id, events=received.events,
                   processed=received.processed), 200


def _refusal(code: int, message: str) -> tuple[Response, int]:
    """The JSON answer the app's error handler gives machines, with our own message."""
    return jsonify(code=code, status=HTTP_STATUS_CODES[code], message=message), code
