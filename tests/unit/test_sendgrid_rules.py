"""The SendGrid rules in plain Python: which events act and how, event times, what the suppression
lists should hold, and when to try again."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from consent_service.domain import ConsentServiceError
from consent_service.domain.ledger import Actor, Decision, Ruling
from consent_service.domain.sendgrid_events import (
    MAX_GROUP_ID,
    Action,
    InvalidSendGridEventError,
    Suppression,
    action_for,
    event_time,
    fingerprint,
    read_event,
)
from consent_service.domain.suppression_state import DesiredSuppressions, desired_suppressions
from consent_service.domain.text import unsafe_character
from consent_service.sendgrid.client import retry_at

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
EMAIL = "email_marketing"


@pytest.mark.parametrize(("event", "action"), [
    ({"event": "unsubscribe"}, Action.OPT_OUT_ALL),
    ({"event": "group_unsubscribe"}, Action.OPT_OUT_TOPIC),
    ({"event": "group_resubscribe"}, Action.OPT_IN_TOPIC),
    ({"event": "spamreport"}, Action.SPAM_REPORT),
    ({"event": "bounce", "type": "bounce"}, Action.UNDELIVERABLE),
    ({"event": "bounce", "type": "blocked"}, None),
    ({"event": "bounce", "type": "deferred"}, None),
    ({"event": "dropped", "reason": "Bounced Address"}, Action.UNDELIVERABLE),
    ({"event": "dropped", "reason": "Invalid"}, Action.UNDELIVERABLE),
    ({"event": "dropped", "reason": "Unsubscribed Address"}, Action.SUPPRESS),
    ({"event": "dropped", "reason": "Spam Reporting Address"}, Action.SUPPRESS),
    ({"event": "dropped", "reason": "Invalid SMTPAPI header"}, None),
    ({"event": "dropped"}, None),
    ({"event": "processed"}, None),
    ({"event": "delivered"}, None),
    ({"event": "open"}, None),
    ({"event": "click"}, None),
    ({"event": "account_status_change"}, None),
])
def test_the_mapping_table(event, action):
    assert action_for(event) is action


def test_timestamps_in_seconds_and_milliseconds_are_the_same_instant():
    seconds = int(NOW.timestamp())

    assert event_time(seconds) == event_time(seconds * 1000) == event_time(str(seconds)) == NOW
    assert event_time(seconds * 1000 + 250) == NOW + timedelta(milliseconds=250)


@pytest.mark.parametrize("value", [None, True, "yesterday", -5, float("nan"), [1], 10**30,
                                   pytest.param(10**400, id="10**400"), float("inf"), "-5", " 5"])
def test_a_timestamp_that_is_not_a_unix_time_is_invalid(value):
    with pytest.raises(InvalidSendGridEventError):
        event_time(value)


def test_a_read_event_keeps_only_what_the_ledger_needs():
    event = read_event({"email": " Reader@Example.org ", "event": "group_unsubscribe",
                        "timestamp": int(NOW.timestamp()), "asm_group_id": "12",
                        "sg_event_id": "abc", "patron_id": "p_1", "ip": "192.0.2.1"})

    assert event is not None
    assert (event.action, event.email, event.occurred_at, event.group_id, event.sg_event_id,
            event.sg_message_id, event.patron_public_id) == (
        Action.OPT_OUT_TOPIC, "reader@example.org", NOW, 12, "abc", None, "p_1")


def test_engagement_events_are_skipped_before_anything_is_read():
    assert read_event({"event": "open", "timestamp": "not even a time"}) is None
    assert read_event({"event": "click", "email": ["a list"], "sg_event_id": "\x00"}) is None


@pytest.mark.parametrize("element", [["not", "an", "event"], "unsubscribe", 7, None,
                                     {"email": "a@example.org", "timestamp": 1},
                                     {"event": ["unsubscribe"], "email": "a@example.org"},
                                     {"event": {"name": "unsubscribe"}}, {"event": 3}])
def test_an_element_that_is_not_an_event_with_a_name_is_invalid_not_skipped(element):
    with pytest.raises(InvalidSendGridEventError):
        read_event(element)


@pytest.mark.parametrize("event", [
    {"event": "unsubscribe", "timestamp": 1},
    {"event": "unsubscribe", "email": "", "timestamp": 1},
    {"event": "group_unsubscribe", "email": "a@example.org", "timestamp": 1},
    {"event": "group_resubscribe", "email": "a@example.org", "timestamp": 1, "asm_group_id": 0},
    {"event": "unsubscribe", "email": "a@example.org"},
])
def test_an_actionable_event_missing_what_it_needs_is_invalid(event):
    with pytest.raises(InvalidSendGridEventError):
        read_event(event)


GOOD = {"event": "group_unsubscribe", "email": "a@example.org", "timestamp": 1_780_000_000,
        "asm_group_id": 101}


@pytest.mark.parametrize(("field", "value"), [
    ("asm_group_id", "\u00b2"),  # a digit to str.isdigit, not to int()
    ("asm_group_id", "\u0661\u0662"),  # Arabic-Indic digits
    ("asm_group_id", 10**30),
    ("asm_group_id", 2**31),  # one past the largest INTEGER
    ("asm_group_id", -101),
    ("asm_group_id", True),
    ("asm_group_id", 101.5),
    ("asm_group_id", [101]),
    ("email", ["a@example.org"]),
    ("email", "a\x00@example.org"),
    ("email", "a@example.org\u202e"),
    pytest.param("timestamp", 10**400, id="timestamp-10**400"),  # too large even for a float
    ("timestamp", "1_780_000_000"),  # float() takes it; SendGrid never sends it
    ("timestamp", "\u0661\u0662\u0663"),
    ("timestamp", {"seconds": 1}),
    ("sg_event_id", "ev\x00nt"),
    ("sg_event_id", "e" * 129),
    ("sg_event_id", ["ev-1"]),
    ("sg_event_id", 1.5),
    ("sg_message_id", "m\x1b[31m"),
    ("patron_id", "p_\u202e1"),
    ("patron_id", {"id": 1}),
    ("reason", "550\x00"),
    ("reason", 550),
])
def test_a_field_of_the_wrong_kind_makes_the_event_invalid_and_the_reason_names_the_field(field,
                                                                                       value):
    with pytest.raises(ConsentServiceError) as raised:
        read_event(dict(GOOD, **{field: value}))

    reason = str(raised.value)
    assert reason.startswith(field) and "\n" not in reason
    assert unsafe_character(reason) is None, "the reason is safe to store and print"


def test_the_largest_group_id_a_database_integer_holds_is_accepted():
    assert read_event(dict(GOOD, asm_group_id=MAX_GROUP_ID)).group_id == MAX_GROUP_ID
    assert read_event(dict(GOOD, asm_group_id=str(MAX_GROUP_ID))).group_id == MAX_GROUP_ID


def test_numeric_ids_are_read_as_text_and_blank_ones_as_missing():
    event = read_event(dict(GOOD, sg_event_id=12345, sg_message_id="  ", patron_id=None))

    assert (event.sg_event_id, event.sg_message_id, event.patron_public_id) == ("12345", None, None)


def test_a_reason_is_never_repeated_in_the_message():
    with pytest.raises(InvalidSendGridEventError) as raised:
        read_event(dict(GOOD, timestamp="private note 555-0100"))

    assert "private" not in str(raised.value)


def test_a_bounce_reason_on_several_lines_is_kept_on_one():
    event = read_event({"event": "bounce", "email": "a@example.org", "timestamp": 1,
                        "type": "bounce", "reason": "550-5.1.1 no such user\r\n550 5.1.1\tbye"})

    assert event.detail == "550-5.1.1 no such user 550 5.1.1 bye"


def test_a_dropped_spam_reporting_address_is_a_spam_suppression():
    event = read_event({"event": "dropped", "email": "a@example.org", "timestamp": 1,
                        "reason": "Spam Reporting Address"})

    assert event is not None and event.suppression is Suppression.SPAM_REPORT


def test_the_fingerprint_ignores_the_event_id_and_the_unit_of_time():
    first = fingerprint("key", "unsubscribe", event_time(1_700_000_000), "m-1", None)

    assert first == fingerprint("key", "unsubscribe", event_time(1_700_000_000_000), "m-1", None)
    assert first != fingerprint("key", "unsubscribe", event_time(1_700_000_001), "m-1", None)
    assert first != fingerprint("key", "unsubscribe", event_time(1_700_000_000), None, None)
    assert first != fingerprint("key", "group_unsubscribe", event_time(1_700_000_000), "m-1", 5)


def ruling(decision, hours_ago):
    return Ruling(Decision(decision), NOW - timedelta(hours=hours_ago), Actor.PATRON)


GROUPS = {"events": 1, "news": 2}


def test_an_opt_out_of_all_email_is_the_global_list_and_leaves_groups_alone():
    state = {(EMAIL, ""): ruling("opt_out", 1), (EMAIL, "events"): ruling("opt_in", 0)}

    assert desired_suppressions(state, GROUPS) == DesiredSuppressions(True)


def test_an_opt_in_to_all_email_takes_the_address_off_and_sets_each_decided_group():
    state = {(EMAIL, ""): ruling("opt_in", 2), (EMAIL, "events"): ruling("opt_out", 3),
             (EMAIL, "news"): ruling("opt_out", 1)}

    assert desired_suppressions(state, GROUPS) == DesiredSuppressions(False, ((1, False),
                                                                             (2, True)))


def test_where_nobody_decided_nothing_is_asked_of_sendgrid():
    assert not desired_suppressions({}, GROUPS).decides_anything
    assert desired_suppressions({(EMAIL, "news"): ruling("opt_out", 1)}, GROUPS) == (
        DesiredSuppressions(None, ((2, True),)))


def test_backoff_doubles_with_jitter_up_to_an_hour():
    rng = random.Random(1)
    waits = [(retry_at(attempt, NOW, rng=rng) - NOW).total_seconds() for attempt in range(1, 10)]

    for attempt, wait in enumerate(waits, start=1):
        ceiling = min(30 * 2 ** (attempt - 1), 3600)
        assert ceiling / 2 <= wait <= ceiling


def test_retry_waits_for_sendgrids_rate_limit_reset_unless_it_is_absurd():
    reset = NOW + timedelta(minutes=10)

    assert retry_at(1, NOW, reset) == reset
    assert retry_at(1, NOW, NOW + timedelta(days=2)) <= NOW + timedelta(seconds=30)
    assert retry_at(1, NOW, NOW - timedelta(minutes=1)) >= NOW + timedelta(seconds=15)
