"""What a guardian decides at each age (birthdays, 29 February), how decisions carry over at 13 and
17, and the guardian settings."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime

import pytest

from consent_service.domain.eligibility import DELIVERABLE, PatronFacts, Reason, evaluate
from consent_service.domain.guardians import (
    GuardianSettingError,
    GuardianSettings,
    Vendor,
    VendorMethod,
    guardian_purposes,
    parse_vendors,
)
from consent_service.domain.ledger import WHOLE_PURPOSE, Actor, Decision, Ruling, counts
from consent_service.domain.purposes import Catalog
from consent_service.domain.tokens import LinkKind, LinkSigner

CATALOG = Catalog()
UNDER_13 = ["child_online_services", "child_programs", "minor_card", "email_marketing",
            "postal_marketing", "photo_video", "contact_update", "third_party_modeling"]
BORN = date(2014, 6, 10)  # 13 on 2027-06-10, 17 on 2031-06-10
LEAP_BORN = date(2016, 2, 29)  # 13 on 2029-03-01, 17 on 2033-03-01 (both common years)


def keys(birth_date: date | None, day: date) -> list[str]:
    return [purpose.key for purpose in guardian_purposes(CATALOG, birth_date, day)]


@pytest.mark.parametrize(("day", "expected"), [
    (date(2027, 6, 9), UNDER_13),  # the day before the 13th birthday
    (date(2027, 6, 10), ["minor_card"]),  # the birthday
    (date(2027, 6, 11), ["minor_card"]),
    (date(2031, 6, 9), ["minor_card"]),  # the day before the 17th birthday
    (date(2031, 6, 10), []),
    (date(2031, 6, 11), []),
])
def test_a_guardian_decides_everything_under_13_and_only_the_card_until_17(day, expected):
    assert keys(BORN, day) == expected


@pytest.mark.parametrize(("day", "expected"), [
    (date(2029, 2, 28), UNDER_13),  # a common year: no 29 February, still 12
    (date(2029, 3, 1), ["minor_card"]),  # 13 on 1 March
    (date(2033, 2, 28), ["minor_card"]),
    (date(2033, 3, 1), []),  # 17 on 1 March
    (date(2032, 2, 29), ["minor_card"]),  # a leap year's 29 February, at 16
])
def test_a_29_february_birthday_turns_13_and_17_on_1_march_in_common_years(day, expected):
    assert keys(LEAP_BORN, day) == expected


def test_a_patron_without_a_birth_date_needs_no_guardian():
    assert keys(None, date(2027, 1, 1)) == []


def verdict(purpose: str, own: dict, day: date, birth_date: date = BORN) -> Reason | None:
    facts = PatronFacts(active=True, birth_date=birth_date, has_email=True, has_postal_address=True)
    return evaluate(CATALOG.get(purpose), None, facts, own, own, DELIVERABLE, day).reason


def ruling(decision: Decision, actor: Actor, day: date) -> Ruling:
    return Ruling(decision, datetime(day.year, day.month, day.day, 18, tzinfo=UTC), actor)


@pytest.mark.parametrize("purpose", ["photo_video", "email_marketing", "contact_update"])
def test_at_13_a_guardians_opt_in_stays_in_force_and_nothing_needs_a_guardian_any_more(purpose):
    given = {(purpose, WHOLE_PURPOSE): ruling(Decision.OPT_IN, Actor.GUARDIAN, date(2025, 1, 5))}
    for day in (date(2027, 6, 9), date(2027, 6, 10), date(2027, 6, 11)):
        assert verdict(purpose, given, day) is None
    assert verdict(purpose, {}, date(2027, 6, 9)) is Reason.GUARDIAN_CONSENT_REQUIRED
    assert verdict(purpose, {}, date(2027, 6, 10)) is None  # the teen decides; opt-out basis


def test_at_13_a_guardians_opt_out_stays_until_the_teen_makes_their_own_decision():
    refused = ruling(Decision.OPT_OUT, Actor.GUARDIAN, date(2025, 1, 5))
    state = {("photo_video", WHOLE_PURPOSE): refused}
    assert verdict("photo_video", state, date(2027, 6, 10)) is Reason.OPTED_OUT

    # the teen's own opt-in the day before the birthday does not count; from the birthday it does
    assert not counts(Decision.OPT_IN, Actor.PATRON, BORN, datetime(2027, 6, 9, 18, tzinfo=UTC))
    teen = ruling(Decision.OPT_IN, Actor.PATRON, date(2027, 6, 10))
    assert counts(Decision.OPT_IN, Actor.PATRON, BORN, teen.occurred_at)
    assert teen.overrides(refused)
    assert verdict("photo_video", {("photo_video", WHOLE_PURPOSE): teen},
                   date(2027, 6, 10)) is None


def test_a_card_under_17_needs_a_guardian_until_the_17th_birthday_even_at_13_and_after():
    teen_own = {("minor_card", WHOLE_PURPOSE): ruling(Decision.OPT_IN, Actor.PATRON,
                                                      date(2029, 1, 1))}
    assert verdict("minor_card", teen_own, date(2031, 6, 9)) is Reason.GUARDIAN_CONSENT_REQUIRED
    assert verdict("minor_card", {}, date(2031, 6, 9)) is Reason.GUARDIAN_CONSENT_REQUIRED
    assert verdict("minor_card", {}, date(2031, 6, 10)) is None
    assert verdict("minor_card", {}, date(2033, 2, 28),
                   LEAP_BORN) is Reason.GUARDIAN_CONSENT_REQUIRED
    assert verdict("minor_card", {}, date(2033, 3, 1), LEAP_BORN) is None


def test_the_vendor_list_names_each_vendor_its_policy_and_what_it_does():
    vendors = parse_vendors("Acme|https://acme.example/privacy|contact_update; "
                            "Both Inc | https://both.example/p ;")
    assert vendors == (
        Vendor("Acme", "https://acme.example/privacy", ("contact_update",)),
        Vendor("Both Inc", "https://both.example/p", ("contact_update", "third_party_modeling")),
    )
    settings = GuardianSettings(vendors=vendors)
    assert [v.name for v in settings.vendors_for("third_party_modeling")] == ["Both Inc"]


@pytest.mark.parametrize(("config", "message"), [
    ({"VENDORS": "Acme"}, "is not Name|https://privacy.url"),
    ({"VENDORS": "Acme|ftp://acme"}, "must be a web address"),
    ({"VENDORS": "Acme|https://a.example|photo_video"}, "purpose must be one of"),
    ({"GUARDIAN_VENDOR_METHOD": "fax"}, "separate_tick or id_check"),
    ({"GUARDIAN_RESPONSE_DAYS": 0}, "whole number of days"),
])
def test_guardian_settings_the_service_cannot_use_are_refused_with_the_reason(config, message):
    with pytest.raises(GuardianSettingError, match=message):
        GuardianSettings.from_config(config)


def test_guardian_settings_default_to_a_separate_tick_and_fourteen_days():
    settings = GuardianSettings.from_config({"VENDORS": "", "POLICY_URL": "https://l.example/p"})
    assert settings.vendor_method is VendorMethod.SEPARATE_TICK
    assert settings.response_days == 14 and settings.policy_url == "https://l.example/p"


def test_a_guardian_link_carries_only_the_childs_id_and_the_requests_id():
    signer = LinkSigner(["k1"], {})
    token = signer.sign(LinkKind.GUARDIAN, "p_child", ref="r_request")
    payload = token.split(".")[0]
    assert base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)) == (
        b'{"p":"p_child","r":"r_request"}')
    claims = signer.verify(LinkKind.GUARDIAN, token)
    assert (claims.patron_id, claims.ref, claims.topic) == ("p_child", "r_request", None)
    assert signer.verify(LinkKind.FAMILY, signer.sign(LinkKind.FAMILY, "g_link")).ref is None
    assert signer.lifetime_days(LinkKind.GUARDIAN) == 7
    assert signer.lifetime_days(LinkKind.FAMILY) == 30
