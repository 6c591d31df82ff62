"""The ILS formats and consent maps, without a database."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent_service.domain import ils_formats
from consent_service.domain.consent_map import decide
from consent_service.domain.ledger import Decision

decisions = st.sampled_from(Decision)
maybe = st.one_of(st.none(), decisions)


@given(said=decisions, last=maybe, in_force=maybe)
def test_an_ils_value_is_never_recorded_twice_and_never_repeats_what_is_in_force(said, last,
                                                                                 in_force):
    recorded = decide(said, last, in_force)
    if recorded:
        assert said != in_force
        # once recorded, the same value from the ILS is quiet, whatever happens here since
        assert not decide(said, said, said)
    if said == last:
        assert not recorded


@given(last=maybe, in_force=maybe)
def test_a_first_ils_opt_in_only_fills_a_gap_and_an_opt_out_is_always_honoured(last, in_force):
    if last is None:
        assert decide(Decision.OPT_IN, None, in_force) is (in_force is None)
        assert decide(Decision.OPT_OUT, None, in_force) is (in_force is not Decision.OPT_OUT)


@pytest.mark.parametrize(("header", "name"), [
    ("cardnumber surname firstname dateofbirth categorycode branchcode", "koha"),
    ("borrowernumber cardnumber surname", "koha"),
    ("cardnumber family_name first_given_name dob juvenile", "evergreen"),
    ("p barcode|patrn name|email addr", "sierra"),
    ("barcode namefirst namelast emailaddress", "polaris"),
    ("card_number email", "generic"),
    ("first_name email", "generic"),  # nobody's: ours, whose checks say card_number is missing
])
def test_detect_reads_each_systems_header(header, name):
    columns = frozenset(header.split("|") if "|" in header else header.split())
    assert ils_formats.detect(columns).name == name


def test_detect_refuses_a_header_two_systems_could_have_written():
    with pytest.raises(ils_formats.UnknownFormatError, match="looks like both"):
        ils_formats.detect(frozenset({"cardnumber", "email"}))


@pytest.mark.parametrize(("cell", "expected"), [
    ("NEWSLETTER:1,EVENTS:0", {"NEWSLETTER": "1", "EVENTS": "0"}),
    ('"NOTE:a, b",newsletter:yes', {"NOTE": "a, b", "NEWSLETTER": "yes"}),
    ("", {}),
    ("broken", {}),
])
def test_koha_patron_attributes(cell, expected):
    assert ils_formats.split_attributes(cell) == expected


@pytest.mark.parametrize(("value", "us", "expected"), [
    ("03-15-1975", True, ("1975-03-15", None)),
    ("3/5/2016", True, ("2016-03-05", None)),
    ("1970-06-30 00:00:00.000", True, ("1970-06-30", None)),
    ("02-30-2016", True, ("02-30-2016", "birth date '02-30-2016' is not a date written MM-DD-YYYY")),
    ("04/11/1982", False, ("04/11/1982", "birth date '04/11/1982' is not a date written "
                                         "YYYY-MM-DD (this system writes ISO dates)")),
])
def test_dates_in_each_systems_writing(value, us, expected):
    assert ils_formats.iso_date(value, us=us) == expected
