"""Recording decisions through the one service: ordering, addresses, children, idempotency."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from consent_service.domain.eligibility import Reason
from consent_service.domain.ledger import Actor, Decision, InvalidEventError, Source
from consent_service.models import ConsentEvent, Patron, Topic
from consent_service.services.decisions import DecisionRequest, UnknownTopicError, record_decision
from consent_service.services.standing import load_standings
from tests.conftest import NOW

EMAIL = "email_marketing"


def decide(session, ctx, patron, decision, *, purpose=EMAIL, topic=None, at=NOW, actor=Actor.PATRON,
           source=Source.PREFERENCE_CENTER, **extra):
    result = record_decision(session, ctx, DecisionRequest(
        purpose=purpose, topic=topic, decision=Decision(decision), source=source, actor=actor,
        occurred_at=at, patron=patron, **extra), now=NOW)
    session.commit()
    return result


def verdict(session, ctx, patron, purpose=EMAIL, topic=None):
    standing = load_standings(session, [patron])[patron.id]
    return standing.verdict(ctx.catalog.get(purpose), topic, NOW.date())


def event_count(session):
    return session.scalar(select(func.count()).select_from(ConsentEvent))


@pytest.fixture
def events_topic(session):
    session.add(Topic(key="events", name="Events", created_at=NOW))
    session.commit()
    return "events"


def test_opt_out_is_in_force_for_everyone_at_the_address(session, ctx, make_patron):
    parent = make_patron(email="Home@Example.org".lower())
    partner = make_patron(email="home@example.org")
    decide(session, ctx, parent, "opt_out")
    assert verdict(session, ctx, partner).reason is Reason.OPTED_OUT


def test_a_record_arriving_later_with_an_opted_out_address_is_not_mailed(session, ctx, make_patron):
    first = make_patron(email="moved@example.org")
    decide(session, ctx, first, "opt_out")
    newcomer = make_patron(email="moved@example.org")
    assert verdict(session, ctx, newcomer).reason is Reason.OPTED_OUT


def test_late_resubscribe_does_not_overturn_newer_unsubscribe(session, ctx, make_patron, events_topic):
    patron = make_patron()
    decide(session, ctx, patron, "opt_out", topic=events_topic, at=NOW)
    late = decide(session, ctx, patron, "opt_in", topic=events_topic, at=NOW - timedelta(hours=3))
    assert late.written and not late.address_changed
    assert verdict(session, ctx, patron, topic=events_topic).reason is Reason.OPTED_OUT


def test_whole_purpose_and_topic_decisions_combine_by_time(session, ctx, make_patron, events_topic):
    patron = make_patron()
    decide(session, ctx, patron, "opt_out", at=NOW - timedelta(days=2))
    decide(session, ctx, patron, "opt_in", topic=events_topic, at=NOW - timedelta(days=1))
    assert verdict(session, ctx, patron, topic=events_topic).allowed
    assert verdict(session, ctx, patron).reason is Reason.OPTED_OUT


def test_repeating_the_decision_in_force_writes_nothing(session, ctx, make_patron):
    patron = make_patron()
    decide(session, ctx, patron, "opt_out")
    before = event_count(session)
    assert not decide(session, ctx, patron, "opt_out").written
    assert not decide(session, ctx, patron, "opt_out", at=NOW - timedelta(days=1)).written
    assert event_count(session) == before


def test_a_childs_own_opt_in_is_recorded_but_does_not_count(session, ctx, make_patron):
    child = make_patron(email="kid@example.org", birth_date=date(2018, 3, 1))
    result = decide(session, ctx, child, "opt_in")
    assert result.written and not result.event.effective
    assert verdict(session, ctx, child).reason is Reason.GUARDIAN_CONSENT_REQUIRED
    decide(session, ctx, child, "opt_in", actor=Actor.GUARDIAN, source=Source.GUARDIAN_PAGE,
           at=NOW - timedelta(minutes=1))
    assert verdict(session, ctx, child).allowed


def test_a_childs_own_opt_out_counts(session, ctx, make_patron):
    child = make_patron(email="kid@example.org", birth_date=date(2018, 3, 1))
    decide(session, ctx, child, "opt_in", actor=Actor.GUARDIAN, at=NOW - timedelta(days=1))
    decide(session, ctx, child, "opt_out")
    assert verdict(session, ctx, child).reason is Reason.OPTED_OUT


def test_unknown_topic_and_naive_time_are_refused(session, ctx, make_patron):
    patron = make_patron()
    with pytest.raises(UnknownTopicError):
        decide(session, ctx, patron, "opt_out", topic="nope")
    with pytest.raises(InvalidEventError):
        decide(session, ctx, patron, "opt_out", at=NOW.replace(tzinfo=None))
    with pytest.raises(InvalidEventError):
        decide(session, ctx, patron, "opt_out", at=NOW + timedelta(days=1))


def test_times_come_back_aware_in_utc(session, ctx, make_patron):
    patron = make_patron()
    decide(session, ctx, patron, "opt_out")
    session.expire_all()
    event = session.scalars(select(ConsentEvent)).one()
    assert event.occurred_at == NOW and event.occurred_at.utcoffset() == timedelta(0)
    assert session.get(Patron, patron.id).created_at.tzinfo is not None


def test_an_email_change_queues_one_sendgrid_sync_job_per_address(session, ctx, make_patron):
    from consent_service.models import SuppressionSyncJob

    first = make_patron(email="shared@example.org")
    second = make_patron(email="shared@example.org")
    decide(session, ctx, first, "opt_out", at=NOW - timedelta(minutes=5))
    decide(session, ctx, second, "opt_in", at=NOW)
    decide(session, ctx, first, "opt_out", purpose="photo_video")
    jobs = session.scalars(select(SuppressionSyncJob)).all()
    assert [(j.address_key, j.email, j.status) for j in jobs] == [
        (ctx.address_key("shared@example.org"), "shared@example.org", "pending")]


def test_an_email_decision_for_an_address_without_a_patron_is_kept_for_the_address(session, ctx, make_patron):
    result = record_decision(session, ctx, DecisionRequest(
        purpose=EMAIL, decision=Decision.OPT_OUT, source=Source.SENDGRID_WEBHOOK, actor=Actor.SYSTEM,
        occurred_at=NOW, email="stranger@example.org"), now=NOW)
    session.commit()
    assert result.address_changed and result.event.patron_id is None
    arrives_later = make_patron(email="stranger@example.org")
    assert verdict(session, ctx, arrives_later).reason is Reason.OPTED_OUT
