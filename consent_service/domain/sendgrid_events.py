"""SendGrid Event Webhook events as the ledger sees them: which ones act on consent, and how."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from consent_service.domain import ConsentServiceError

# A Unix time this large is in milliseconds: 10**11 seconds is the year 5138, 10**11 ms is 1973.
MILLISECONDS_FROM = 10**11
_DETAIL_LENGTH = 200


class Action(StrEnum):
    """What an event asks of the ledger."""

    OPT_OUT_ALL = "opt_out_all"  # the address leaves all library email
    OPT_OUT_TOPIC = "opt_out_topic"  # the address leaves one topic (its unsubscribe group)
    OPT_IN_TOPIC = "opt_in_topic"  # the address rejoins one topic
    SPAM_REPORT = "spam_report"  # all email stops, and the address is suppressed
    SUPPRESS = "suppress"  # SendGrid dropped mail to an address on its unsubscribe or spam list
    UNDELIVERABLE = "undeliverable"  # a hard bounce; mail dropped for a bounced or invalid address


class Suppression(StrEnum):
    """Why an address is suppressed (`AddressSuppression.reason`)."""

    SPAM_REPORT = "spam_report"
    SENDGRID_UNSUBSCRIBED = "sendgrid_unsubscribed"


# event name -> action, for the events whose action does not depend on their details
_BY_NAME: Mapping[str, Action] = {
    "unsubscribe": Action.OPT_OUT_ALL,
    "group_unsubscribe": Action.OPT_OUT_TOPIC,
    "group_resubscribe": Action.OPT_IN_TOPIC,
    "spamreport": Action.SPAM_REPORT,
}
# `dropped` reasons (lower-case) that say something about the address rather than the message.
# "Invalid SMTPAPI header" is about our message, so `invalid` must be the whole reason.
_DROPPED_UNDELIVERABLE_EXACT = frozenset({"invalid", "invalid address", "invalid email address"})
_DROPPED_UNDELIVERABLE_PART = "bounced address"
_DROPPED_SUPPRESSED: Mapping[str, Suppression] = {
    "unsubscribed address": Suppression.SENDGRID_UNSUBSCRIBED,
    "spam reporting address": Suppression.SPAM_REPORT,
}
# Only these event names can act on consent; everything else (processed, delivered, open, click,
# deferred, and names SendGrid adds later) is skipped without reading further.
ACTIONABLE_NAMES = frozenset({*_BY_NAME, "bounce", "dropped"})


class InvalidSendGridEventError(ConsentServiceError):
    """An event that should act on consent but lacks what it needs (address, time, group)."""


@dataclass(frozen=True)
class SendGridEvent:
    """An actionable event, read: what to do, to which address (as sent), when, with references."""

    name: str
    action: Action
    email: str
    occurred_at: datetime
    group_id: int | None = None
    sg_event_id: str | None = None
    sg_message_id: str | None = None
    patron_public_id: str | None = None
    suppression: Suppression | None = None
    detail: str = ""  # a bounce or drop reason, shortened


def action_for(event: Mapping[str, Any]) -> Action | None:
    """The mapping table: what an event asks of the ledger, or None when it asks nothing.

    `unsubscribe` → leave all email; `group_unsubscribe` / `group_resubscribe` → leave / rejoin
    the group's topic; `spamreport` → leave all email and suppress the address; `bounce` of type
    `bounce` → undeliverable (`blocked` and `deferred` are temporary: nothing); `dropped` because
    of a bounced or invalid address → undeliverable, because of an unsubscribed or spam-reporting
    address → suppressed; any other event or reason → nothing.
    """
    name = event.get("event")
    if name in _BY_NAME:
        return _BY_NAME[name]  # type: ignore[index]
    if name == "bounce":
        kind = event.get("type")
        return Action.UNDELIVERABLE if kind in (None, "bounce") else None
    if name == "dropped":
        reason = _text(event.get("reason")).strip().lower()
        if reason in _DROPPED_UNDELIVERABLE_EXACT or _DROPPED_UNDELIVERABLE_PART in reason:
            return Action.UNDELIVERABLE
        if reason in _DROPPED_SUPPRESSED:
            return Action.SUPPRESS
    return None


def read_event(event: Any) -> SendGridEvent | None:
    """Read one element of a webhook batch: None when it asks nothing of the ledger (checked first,
    on the event name alone, so the many opens and clicks cost nothing); raise
    InvalidSendGridEventError when it should act but cannot. Only `email`, `event` and `timestamp`
    are required; custom args such as `patron_id` are top-level keys."""
    if not isinstance(event, dict) or event.get("event") not in ACTIONABLE_NAMES:
        return None
    action = action_for(event)
    if action is None:
        return None
    email = event.get("email")
    if not isinstance(email, str) or not email.strip():
        raise InvalidSendGridEventError(f"a {event['event']} event without an email address")
    group_id = None
    if action in (Action.OPT_OUT_TOPIC, Action.OPT_IN_TOPIC):
        group_id = _group_id(event.get("asm_group_id"))
        if group_id is None:
            raise InvalidSendGridEventError(f"a {event['event']} event without an asm_group_id")
    suppression = None
    if action is Action.SPAM_REPORT:
        suppression = Suppression.SPAM_REPORT
    elif action is Action.SUPPRESS:
        suppression = _DROPPED_SUPPRESSED[_text(event.get("reason")).strip().lower()]
    return SendGridEvent(
        name=event["event"],
        action=action,
        email=email.strip(),
        occurred_at=event_time(event.get("timestamp")),
        group_id=group_id,
        sg_event_id=_optional_text(event.get("sg_event_id")),
        sg_message_id=_optional_text(event.get("sg_message_id")),
        patron_public_id=_optional_text(event.get("patron_id")),
        suppression=suppression,
        detail=_text(event.get("reason"))[:_DETAIL_LENGTH],
    )


def event_time(value: Any) -> datetime:
    """An event's `timestamp` as an aware UTC time: Unix seconds, or milliseconds (told apart by
    size); a number or a string of digits."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidSendGridEventError(f"event timestamp {value!r} is not a Unix time")
    try:
        number = float(value)
    except ValueError:
        raise InvalidSendGridEventError(f"event timestamp {value!r} is not a Unix time") from None
    if number != number or number < 0:  # NaN or negative
        raise InvalidSendGridEventError(f"event timestamp {value!r} is not a Unix time")
    seconds = number / 1000 if number >= MILLISECONDS_FROM else number
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidSendGridEventError(f"event timestamp {value!r} is out of range") from None


def fingerprint(address_key: str, name: str, occurred_at: datetime, sg_message_id: str | None,
                group_id: int | None) -> str:
    """What makes two deliveries the same event whatever their `sg_event_id` (which has been seen to
    change between retries): address, event, instant, message and group, hashed."""
    parts = (address_key, name, occurred_at.astimezone(UTC).isoformat(), sg_message_id or "",
             "" if group_id is None else str(group_id))
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def _group_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip()) or None
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _optional_text(value: Any) -> str | None:
    if isinstance(value, int | str) and not isinstance(value, bool) and str(value).strip():
        return str(value).strip()[:128]
    return None
