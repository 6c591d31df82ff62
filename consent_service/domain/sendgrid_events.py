"""SendGrid Event Webhook events as the ledger sees them: which ones act on consent, and how."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from consent_service.domain import ConsentServiceError
from consent_service.domain.addresses import InvalidEmailError, normalize_email
from consent_service.domain.text import clean_text

# A Unix time this large is in milliseconds: 10**11 seconds is the year 5138, 10**11 ms is 1973.
MILLISECONDS_FROM = 10**11
MAX_GROUP_ID = 2**31 - 1  # the largest value of a database INTEGER column
REFERENCE_LENGTH = 128  # sg_event_id, sg_message_id, patron_id: the sg_event_id columns' length
_DETAIL_LENGTH = 200
_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?", re.ASCII)


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
    """An element of a batch that is not an event, or an event that should act on consent but lacks
    what it needs (address, time, group) or holds a field of the wrong kind; the message is one line
    naming the field, never its value."""


@dataclass(frozen=True)
class SendGridEvent:
    """An actionable event, read and checked: what to do, to which address (normalised), when, with
    references."""

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
    if not isinstance(name, str):
        return None
    if name in _BY_NAME:
        return _BY_NAME[name]
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
    InvalidSendGridEventError (or UnsafeTextError, InvalidEmailError) when it should act but cannot,
    with a one-line reason naming the field and never echoing its value.

    Only `email`, `event` and `timestamp` are required; custom args such as `patron_id` are top-level
    keys. Every field the ledger reads is checked for its type, its range (a group id and a time must
    fit the database's columns) and, for text, against the one rule for stored text (`clean_text`):
    a field of the wrong kind makes the event invalid rather than being ignored. Fields the ledger
    does not read are not looked at."""
    if not isinstance(event, dict):
        raise InvalidSendGridEventError(f"not a JSON object but {_kind(event)}")
    name = event.get("event")
    if not isinstance(name, str):
        raise InvalidSendGridEventError(f"event: {_kind(name)} where the event name belongs")
    if name not in ACTIONABLE_NAMES:
        return None
    action = action_for(event)
    if action is None:
        return None
    group_id = None
    if action in (Action.OPT_OUT_TOPIC, Action.OPT_IN_TOPIC):
        group_id = group_id_of(event.get("asm_group_id"))
    suppression = None
    if action is Action.SPAM_REPORT:
        suppression = Suppression.SPAM_REPORT
    elif action is Action.SUPPRESS:
        suppression = _DROPPED_SUPPRESSED[_text(event.get("reason")).strip().lower()]
    return SendGridEvent(
        name=name,
        action=action,
        email=_email(event.get("email")),
        occurred_at=event_time(event.get("timestamp")),
        group_id=group_id,
        sg_event_id=_reference(event.get("sg_event_id"), "sg_event_id"),
        sg_message_id=_reference(event.get("sg_message_id"), "sg_message_id"),
        patron_public_id=_reference(event.get("patron_id"), "patron_id"),
        suppression=suppression,
        detail=_detail(event.get("reason")),
    )


def event_time(value: Any) -> datetime:
    """An event's `timestamp` as an aware UTC time: Unix seconds, or milliseconds (told apart by
    size); a number or a string of ASCII digits (with an optional fraction), from 1970 on."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidSendGridEventError(f"timestamp: {_kind(value)}, not a Unix time")
    if isinstance(value, str) and not _DECIMAL.fullmatch(value):
        raise InvalidSendGridEventError("timestamp: text that is not a Unix time")
    try:
        number = float(value)
    except (OverflowError, ValueError):  # an integer too large for a float
        raise InvalidSendGridEventError("timestamp: out of range") from None
    if number != number or number < 0:  # NaN or negative
        raise InvalidSendGridEventError("timestamp: not a Unix time (negative or not a number)")
    seconds = number / 1000 if number >= MILLISECONDS_FROM else number
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidSendGridEventError("timestamp: out of range") from None


def group_id_of(value: Any) -> int:
    """An `asm_group_id`: a whole number (or a string of ASCII digits) from 1 to MAX_GROUP_ID, the
    largest a database integer column holds.

    :raise InvalidSendGridEventError: missing, of another type, or out of range.
    """
    if value is None:
        raise InvalidSendGridEventError("asm_group_id: missing, and the event is about a group")
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSendGridEventError(f"asm_group_id: {_kind(value)}, not a group id")
    if not 1 <= value <= MAX_GROUP_ID:
        raise InvalidSendGridEventError(f"asm_group_id: out of range (1 to {MAX_GROUP_ID})")
    return value


def fingerprint(address_key: str, name: str, occurred_at: datetime, sg_message_id: str | None,
                group_id: int | None) -> str:
    """What makes two deliveries the same event whatever their `sg_event_id` (which has been seen to
    change between retries): address, event, instant, message and group, hashed."""
    parts = (address_key, name, occurred_at.astimezone(UTC).isoformat(), sg_message_id or "",
             "" if group_id is None else str(group_id))
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def _email(value: Any) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidSendGridEventError("email: missing or blank")
    if not isinstance(value, str):
        raise InvalidSendGridEventError(f"email: {_kind(value)}, not an address")
    try:
        return normalize_email(clean_text(value, field="email"), strict=False)
    except InvalidEmailError as error:
        raise InvalidSendGridEventError(f"email: {error}") from None


def _reference(value: Any, field: str) -> str | None:
    """An optional id SendGrid or our custom args give (text, or a whole number): None when absent
    or blank."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidSendGridEventError(f"{field}: {_kind(value)}, not an id")
    text = clean_text(str(value), field=field).strip()
    if len(text) > REFERENCE_LENGTH:
        raise InvalidSendGridEventError(f"{field}: longer than {REFERENCE_LENGTH} characters")
    return text or None


def _detail(value: Any) -> str:
    """A bounce or drop reason on one line, shortened (an SMTP reply may span several lines)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidSendGridEventError(f"reason: {_kind(value)}, not text")
    return " ".join(clean_text(value, field="reason", multiline=True).split())[:_DETAIL_LENGTH]


def _kind(value: Any) -> str:
    """What a JSON value is, to name it in a reason without repeating it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
