"""The policy rules: who is sent a change notice, the notice rate, no back-dating; and the consent
receipt's stable, unguessable ids and its categories for every purpose."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent_service.domain.ledger import Source
from consent_service.domain.policies import (
    NoticeSkip,
    PolicyError,
    check_effective,
    notice_skip,
    parse_rate,
)
from consent_service.domain.purposes import PurposeKey
from consent_service.domain.receipts import (
    COLLECTION_METHODS,
    PII_CATEGORIES,
    PURPOSE_CATEGORIES,
    receipt_id,
)

TODAY = date(2026, 6, 1)
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


@given(active=st.booleans(), has_email=st.booleans(),
       birth_date=st.none() | st.dates(date(1920, 1, 1), TODAY),
       suppressed=st.booleans(), undeliverable=st.booleans())
def test_a_notice_goes_exactly_to_active_patrons_13_or_older_at_a_deliverable_address(
        active, has_email, birth_date, suppressed, undeliverable):
    skip = notice_skip(active=active, has_email=has_email, birth_date=birth_date, today=TODAY,
                       suppressed=suppressed, undeliverable=undeliverable)
    child = birth_date is not None and birth_date > date(2013, 6, 1)
    told = active and has_email and not child and not suppressed and not undeliverable
    assert (skip is None) == told
    if not active:
        assert skip is NoticeSkip.INACTIVE  # the first reason wins


def test_a_child_is_told_from_the_13th_birthday():
    def skip(born):
        return notice_skip(active=True, has_email=True, birth_date=born, today=TODAY,
                           suppressed=False, undeliverable=False)
    assert skip(date(2013, 6, 2)) is NoticeSkip.CHILD_UNDER_13
    assert skip(date(2013, 6, 1)) is None


@pytest.mark.parametrize(("text", "per_second"), [
    ("10/second", 10), ("10 per second", 10), ("300/minute", 5), ("90 per min", 1.5),
    ("2.5/s", 2.5), ("60 / m", 1), (" 120 PER MINUTE ", 2)])
def test_a_rate_is_read_per_second_or_per_minute(text, per_second):
    assert parse_rate(text) == per_second


@pytest.mark.parametrize("text", ["", "fast", "10", "0/second", "-1/second", "10/hour", "1e3/s"])
def test_a_rate_that_is_not_one_is_refused(text):
    with pytest.raises(PolicyError, match="a notice rate is like"):
        parse_rate(text)


def test_a_version_is_never_back_dated_and_follows_the_latest():
    check_effective(NOW, latest=NOW - timedelta(days=1), now=NOW)
    with pytest.raises(PolicyError, match="cannot be back-dated"):
        check_effective(NOW - timedelta(seconds=1), latest=None, now=NOW)
    with pytest.raises(PolicyError, match="after the latest version's"):
        check_effective(NOW + timedelta(days=1), latest=NOW + timedelta(days=1), now=NOW)


@given(st.integers(1, 2**62), st.integers(1, 2**62))
def test_receipt_ids_are_stable_uuids_that_differ_per_event_and_per_key(first, second):
    one = receipt_id(b"key", first)
    assert one == receipt_id(b"key", first)
    assert len(one) == 36 and one[14] == "4"
    assert (one == receipt_id(b"key", second)) == (first == second)
    assert one != receipt_id(b"another key", first)


def test_every_purpose_and_source_has_receipt_words():
    assert set(PURPOSE_CATEGORIES) == set(PurposeKey) == set(PII_CATEGORIES)
    assert set(COLLECTION_METHODS) == set(Source)
