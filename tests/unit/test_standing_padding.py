"""Padding `IN` lists keeps the number of distinct statements small without changing what they match."""

from hypothesis import given
from hypothesis import strategies as st

from consent_service.services.standing import _padded


@given(st.lists(st.integers(), max_size=3000))
def test_padding_keeps_the_same_values_and_rounds_the_length_to_a_power_of_two(values):
    padded = _padded(values)
    assert set(padded) == set(values)
    assert padded[: len(values)] == values
    assert len(padded) == 0 or len(padded) & (len(padded) - 1) == 0
    assert len(padded) < 2 * max(len(values), 1)
