"""Properties of the ledger's ordering and fold, for any events in any order."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from consent_service.domain.ledger import (
    WHOLE_PURPOSE,
    Actor,
    Decision,
    Key,
    Ruling,
    age_on,
    counts,
    fold,
    resolve,
)

BASE = datetime(2026, 1, 1, tzinfo=UTC)
PURPOSES = ("email_marketing", "photo_video")
TOPICS = (WHOLE_PURPOSE, "events", "kids_teens")

rulings = st.builds(
    Ruling,
    decision=st.sampled_from(Decision),
    occurred_at=st.integers(0, 50).map(lambda m: BASE + timedelta(minutes=m)),
    actor=st.sampled_from(Actor),
    event_ref=st.text(min_size=1, max_size=3),
)
keys = st.tuples(st.sampled_from(PURPOSES), st.sampled_from(TOPICS))
event_lists = st.lists(st.tuples(keys, rulings), max_size=25)


def _decisions(state: dict[Key, Ruling]) -> dict[Key, tuple[Decision, datetime, Actor]]:
    return {k: (r.decision, r.occurred_at, r.actor) for k, r in state.items()}


@given(event_lists, st.randoms(use_true_random=False))
def test_any_order_of_the_same_events_gives_the_same_state(events, rnd):
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert _decisions(fold(events)) == _decisions(fold(shuffled))


@given(event_lists)
def test_the_event_in_force_is_never_older_than_another_at_its_key(events):
    state = fold(events)
    for key, ruling in events:
        assert state[key].occurred_at >= ruling.occurred_at


@given(event_lists, keys, rulings)
def test_an_older_event_never_overturns_a_newer_one(events, key, late):
    state = fold(events)
    current = state.get(key)
    after = fold([*events, (key, late)])
    if current is not None and late.occurred_at < current.occurred_at:
        assert after[key] == current


@given(event_lists, st.sampled_from(PURPOSES), st.sampled_from(TOPICS[1:]))
def test_whole_purpose_and_topic_decisions_combine_by_time(events, purpose, topic):
    state = fold(events)
    whole, specific = state.get((purpose, WHOLE_PURPOSE)), state.get((purpose, topic))
    in_force = resolve(state, purpose, topic)
    candidates = [r for r in (whole, specific) if r is not None]
    if not candidates:
        assert in_force is None
    else:
        assert in_force == max(candidates, key=Ruling.precedence)
        assert in_force.occurred_at == max(r.occurred_at for r in candidates)


def test_same_instant_opt_out_beats_opt_in_whatever_the_arrival():
    key = ("email_marketing", WHOLE_PURPOSE)
    opt_in = Ruling(Decision.OPT_IN, BASE, Actor.PATRON, "a")
    opt_out = Ruling(Decision.OPT_OUT, BASE, Actor.PATRON, "b")
    assert fold([(key, opt_in), (key, opt_out)])[key].decision is Decision.OPT_OUT
    assert fold([(key, opt_out), (key, opt_in)])[key].decision is Decision.OPT_OUT


birth_dates = st.dates(min_value=date(2000, 1, 1), max_value=date(2026, 1, 1))
# hypothesis takes naive bounds and attaches the timezone itself
instants = st.datetimes(min_value=datetime(2010, 1, 1), max_value=datetime(2030, 1, 1),  # noqa: DTZ001
                        timezones=st.just(UTC))


@given(birth_dates, instants, st.sampled_from([Actor.PATRON, Actor.STAFF, Actor.SYSTEM]))
def test_under_13_only_a_guardians_opt_in_counts(birth_date, at, actor):
    child = age_on(birth_date, at.date()) < 13
    assert counts(Decision.OPT_IN, actor, birth_date, at) is not child
    assert counts(Decision.OPT_IN, Actor.GUARDIAN, birth_date, at)


@given(birth_dates, instants, st.sampled_from(Actor))
def test_an_opt_out_counts_whoever_makes_it(birth_date, at, actor):
    assert counts(Decision.OPT_OUT, actor, birth_date, at)


def test_age_turns_on_the_birthday_and_leap_day_birthdays_turn_on_1_march():
    assert age_on(date(2013, 6, 1), date(2026, 5, 31)) == 12
    assert age_on(date(2013, 6, 1), date(2026, 6, 1)) == 13
    assert age_on(date(2013, 6, 1), date(2026, 6, 2)) == 13
    leapling = date(2012, 2, 29)
    assert age_on(leapling, date(2025, 2, 28)) == 12
    assert age_on(leapling, date(2025, 3, 1)) == 13
    assert age_on(leapling, date(2024, 2, 29)) == 12
