"""The eligibility function: one reason, in a fixed order, from facts, decisions and address status."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent_service.domain.eligibility import (
    DELIVERABLE,
    AddressStatus,
    PatronFacts,
    Reason,
    born_after,
    evaluate,
)
from consent_service.domain.ledger import (
    WHOLE_PURPOSE,
    Actor,
    Decision,
    Ruling,
    age_on,
    counts,
    fold,
)
from consent_service.domain.purposes import Catalog, UnknownPurposeError

TODAY = date(2026, 6, 1)
AT = datetime(2026, 5, 1, tzinfo=UTC)
ADULT = PatronFacts(active=True, birth_date=date(1980, 1, 1), has_email=True, has_postal_address=True)
CHILD = PatronFacts(active=True, birth_date=date(2018, 1, 1), has_email=True, has_postal_address=True)
TEEN = PatronFacts(active=True, birth_date=date(2011, 1, 1), has_email=True, has_postal_address=True)
CATALOG = Catalog()
EMAIL = CATALOG.get("email_marketing")


def ruling(decision, actor=Actor.PATRON, days_ago=0):
    return Ruling(Decision(decision), AT - timedelta(days=days_ago), actor)


def check(purpose, facts=ADULT, own=None, address=None, status=DELIVERABLE, topic=None, catalog=CATALOG):
    return evaluate(catalog.get(purpose), topic, facts, own or {}, address or {}, status, TODAY)


def test_an_adult_with_no_decision_may_be_emailed_on_an_opt_out_basis():
    assert check("email_marketing").allowed


def test_an_inactive_patron_gets_nothing_whatever_they_agreed():
    inactive = PatronFacts(False, date(1980, 1, 1), True, True)
    assert check("email_marketing", inactive,
                 address={("email_marketing", ""): ruling("opt_in")}).reason is Reason.INACTIVE


@pytest.mark.parametrize(("status", "reason"), [
    (AddressStatus(undeliverable=True), Reason.ADDRESS_UNDELIVERABLE),
    (AddressStatus(suppressed=True), Reason.ADDRESS_SUPPRESSED),
])
def test_address_status_blocks_email_only(status, reason):
    assert check("email_marketing", status=status).reason is reason
    assert check("postal_marketing", status=status).allowed


def test_missing_channels_are_named():
    no_email = PatronFacts(True, date(1980, 1, 1), False, False)
    assert check("email_marketing", no_email).reason is Reason.NO_EMAIL
    assert check("postal_marketing", no_email).reason is Reason.NO_POSTAL_ADDRESS
    assert check("photo_video", no_email).allowed


def test_an_email_opt_out_on_the_address_stops_every_patron_there():
    address = {("email_marketing", WHOLE_PURPOSE): ruling("opt_out")}
    assert check("email_marketing", address=address).reason is Reason.OPTED_OUT


def test_a_topic_opt_out_stops_only_that_topic():
    address = {("email_marketing", "events"): ruling("opt_out")}
    assert check("email_marketing", address=address, topic="events").reason is Reason.OPTED_OUT
    assert check("email_marketing", address=address, topic="library_news").allowed


def test_an_opt_in_basis_needs_an_opt_in():
    catalog = Catalog({"photo_video": "opt_in"})
    assert check("photo_video", catalog=catalog).reason is Reason.NOT_OPTED_IN
    own = {("photo_video", ""): ruling("opt_in")}
    assert check("photo_video", own=own, catalog=catalog).allowed


def test_guardian_only_purposes_cannot_change_basis():
    with pytest.raises(Exception, match="cannot take basis"):
        Catalog({"minor_card": "opt_out"})
    with pytest.raises(UnknownPurposeError):
        Catalog({"fax_marketing": "opt_in"})


def test_a_child_needs_a_guardians_opt_in_for_each_purpose_and_vendor_disclosure_separately():
    own = {("email_marketing", ""): ruling("opt_in", Actor.GUARDIAN),
           ("contact_update", ""): ruling("opt_in", Actor.GUARDIAN)}
    address = {("email_marketing", ""): ruling("opt_in", Actor.GUARDIAN)}
    assert check("email_marketing", CHILD, own, address).allowed
    assert check("contact_update", CHILD, own).allowed
    assert check("third_party_modeling", CHILD, own).reason is Reason.GUARDIAN_CONSENT_REQUIRED
    assert check("photo_video", CHILD, own).reason is Reason.GUARDIAN_CONSENT_REQUIRED


def test_an_address_level_opt_in_is_not_a_guardians_consent():
    address = {("email_marketing", ""): ruling("opt_in", Actor.PATRON)}
    assert check("email_marketing", CHILD, {}, address).reason is Reason.GUARDIAN_CONSENT_REQUIRED


def test_a_minor_card_needs_a_guardian_under_17_and_not_after():
    assert check("minor_card", TEEN).reason is Reason.GUARDIAN_CONSENT_REQUIRED
    assert check("minor_card", TEEN, {("minor_card", ""): ruling("opt_in", Actor.GUARDIAN)}).allowed
    assert check("minor_card", ADULT).allowed
    assert check("email_marketing", TEEN).allowed


events = st.lists(st.tuples(
    st.sampled_from(["email_marketing", "photo_video", "contact_update"]),
    st.sampled_from([WHOLE_PURPOSE, "events"]),
    st.sampled_from(Decision),
    st.sampled_from([Actor.PATRON, Actor.STAFF, Actor.SYSTEM]),
    st.integers(0, 30),
), max_size=12)


@given(events, st.sampled_from(["email_marketing", "photo_video", "contact_update"]),
       st.sampled_from([None, "events"]))
def test_nothing_but_a_guardian_ever_lets_a_child_be_contacted(history, purpose, topic):
    """Whatever the child, staff or the system decided, a child under 13 is never eligible."""
    folded = fold(
        ((p, t), Ruling(d, AT - timedelta(days=n), a))
        for p, t, d, a, n in history
        if counts(d, a, CHILD.birth_date, AT - timedelta(days=n))
    )
    verdict = check(purpose, CHILD, folded, folded, topic=topic if purpose == "email_marketing" else None)
    assert not verdict.allowed


@given(st.dates(date(1900, 1, 1), date(2100, 12, 31)), st.dates(date(1990, 1, 1), date(2100, 12, 31)),
       st.integers(min_value=0, max_value=90))
def test_born_after_says_who_is_under_age_as_age_on_does(birth_date, today, age):
    assert (birth_date > born_after(age, today)) == (age_on(birth_date, today) < age)


def test_born_after_a_leap_day_falls_back_to_the_28th():
    assert born_after(13, date(2028, 2, 29)) == date(2015, 2, 28)
    assert age_on(date(2015, 3, 1), date(2028, 2, 29)) == 12
    assert born_after(12, date(2028, 2, 29)) == date(2016, 2, 29)
