"""The Signed Event Webhook: checking a batch's signature and age, and reading its body."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader

from consent_service.domain import ConsentServiceError

SIGNATURE_HEADER: str = EventWebhookHeader.SIGNATURE
TIMESTAMP_HEADER: str = EventWebhookHeader.TIMESTAMP
FUTURE_SKEW = timedelta(minutes=5)  # a signed timestamp this far ahead of our clock is still fine
_INTEGER_DIGITS = 4000  # under Python's default limit for int() from text (4,300 digits)


class WebhookKeyError(ConsentServiceError):
    """The configured verification key is not a base64 DER ECDSA public key."""


class WebhookSignatureError(ConsentServiceError):
    """A batch that is unsigned, wrongly signed, or signed too long ago or in the future."""


class WebhookBodyError(ConsentServiceError):
    """A body that is not a JSON array."""


@dataclass(frozen=True)
class SignedBatch:
    """A verified signature: when SendGrid signed the batch, and how long ago that was."""

    signed_at: datetime
    age: timedelta


class WebhookVerifier:
    """Checks batches against the public key SendGrid shows for the account (base64 DER), with the
    official helper, over the raw request bytes exactly as received."""

    def __init__(self, public_key_base64: str) -> None:
        self._helper = EventWebhook()
        try:
            key = self._helper.convert_public_key_to_ecdsa(public_key_base64.strip())
        except ValueError:
            key = None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise WebhookKeyError("CONSENT_SENDGRID_WEBHOOK_PUBLIC_KEY is not the base64 DER "
                                  "public key SendGrid shows for the Signed Event Webhook")
        self._key = key

    def verify(self, body: bytes, signature: str | None, timestamp: str | None, *, now: datetime,
               max_age: timedelta) -> SignedBatch:
        """Accept the batch or raise WebhookSignatureError. The signature (ECDSA P-256, SHA-256,
        base64 DER) covers the timestamp header followed by the body; the signed time must be at
        most `max_age` old and at most FUTURE_SKEW ahead of `now`."""
        if not signature or not timestamp:
            raise WebhookSignatureError("the batch is not signed")
        if not timestamp.isascii() or not timestamp.isdigit():
            raise WebhookSignatureError("the signed timestamp is not a Unix time")
        try:
            signed_at = datetime.fromtimestamp(int(timestamp), UTC)
        except (OverflowError, OSError, ValueError):
            raise WebhookSignatureError("the signed timestamp is out of range") from None
        age = now - signed_at
        if age > max_age:
            raise WebhookSignatureError(f"the batch was signed {int(age.total_seconds())} s ago, "
                                        f"more than the {int(max_age.total_seconds())} s allowed")
        if -age > FUTURE_SKEW:
            raise WebhookSignatureError("the batch is signed with a time in the future")
        try:
            # The helper takes text and encodes it again as UTF-8: these very bytes again.
            payload = body.decode("utf-8")
            valid = self._helper.verify_signature(payload, signature, timestamp, self._key)
        except ValueError:  # bytes that are not UTF-8, a signature that is not base64
            valid = False
        if not valid:
            raise WebhookSignatureError("the signature does not match the batch")
        return SignedBatch(signed_at, age)


def parse_batch(body: bytes) -> list[Any]:
    """The batch's events: the body must be a JSON array (each element is judged later, on its own:
    an integer too long for Python to read becomes an infinite float there, so that event alone is
    refused as out of range)."""
    try:
        events = json.loads(body, parse_int=_json_integer)
    except (ValueError, RecursionError):  # bytes that are not UTF-8; absurd nesting
        raise WebhookBodyError("the body is not JSON") from None
    if not isinstance(events, list):
        raise WebhookBodyError("the body is not a JSON array of events")
    return events


def _json_integer(digits: str) -> int | float:
    """A JSON integer; past Python's limit on digits (which would refuse the whole body) an infinity."""
    if len(digits) <= _INTEGER_DIGITS:
        return int(digits)
    return float("-inf") if digits.startswith("-") else float("inf")
