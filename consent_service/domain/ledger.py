"""The consent ledger's rules: what an event is, which one is in force, and how events fold into state."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from consent_service.domain import ConsentServiceError
from consent_service.domain.purposes import CHILD_AGE


class Decision(StrEnum):
    OPT_IN = "opt_in"
    OPT_OUT = "opt_out"


class Source(StrEnum):
    """Where a decision was made."""

    UNSUBSCRIBE_LINK = "unsubscribe_link"
    ONE_CLICK = "one_click"
    PREFERENCE_CENTER = "preference_center"
    GUARDIAN_PAGE = "guardian_page"
    STAFF_DESK = "staff_desk"  # in person, at a desk
    STAFF_PHONE = "staff_phone"
    STAFF_EMAIL = "staff_email"  # the patron wrote to the library; staff recorded it
    STAFF_PAPER_FORM = "staff_paper_form"  # a signed paper form, entered by staff
    SENDGRID_WEBHOOK = "sendgrid_webhook"
    SENDGRID_RECONCILE = "sendgrid_reconcile"
    IMPORT = "import"
    API = "api"
    GPC = "gpc"
    ERASURE = "erasure"  # the vendor opt-outs recorded when a patron's data is erased


# How a patron told staff, each its own source: the ledger says how a decision reached the library,
# so a phone call and a paper form must not look alike when a decision is questioned.
STAFF_SOURCES: tuple[Source, ...] = (Source.STAFF_DESK, Source.STAFF_PHONE, Source.STAFF_EMAIL,
                                     Source.STAFF_PAPER_FORM)


class Actor(StrEnum):
    """Who made a decision."""

    PATRON = "patron"
    GUARDIAN = "guardian"
    STAFF = "staff"
    SYSTEM = "system"


WHOLE_PURPOSE = ""  # the topic of a decision about the whole purpose (stored as "", shown as none)


class InvalidEventError(ConsentServiceError):
    """An event that breaks a rule of the ledger (naive time, topic on a purpose without topics...)."""


@dataclass(frozen=True)
class Ruling:
    """A decision in force for one (purpose, topic): what was decided, when, by whom, by which event."""

    decision: Decision
    occurred_at: datetime
    actor: Actor
    event_ref: str = ""

    def precedence(self) -> tuple[datetime, int, int]:
        """Order of rulings: the later `occurred_at` wins; at the same instant an opt-out beats an
        opt-in (the safer answer), then a guardian beats staff, a patron and the system. The event
        reference plays no part, so the outcome never depends on the order of arrival."""
        return (self.occurred_at, 1 if self.decision is Decision.OPT_OUT else 0, _ACTOR_RANK[self.actor])

    def overrides(self, other: Ruling | None) -> bool:
        """Whether this ruling replaces `other` in force (strictly higher precedence)."""
        return other is None or self.precedence() > other.precedence()


_ACTOR_RANK = {Actor.SYSTEM: 0, Actor.PATRON: 1, Actor.STAFF: 2, Actor.GUARDIAN: 3}

Key = tuple[str, str]  # (purpose, topic); topic WHOLE_PURPOSE for the whole purpose


def require_aware(at: datetime, what: str = "time") -> datetime:
    """Reject naive datetimes: every time in the ledger is an instant."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidEventError(f"{what} must carry a timezone offset")
    return at


def age_on(birth_date: date, day: date) -> int:
    """Whole years of age on `day`; a 29 February birthday falls on 1 March in common years."""
    years = day.year - birth_date.year
    if (day.month, day.day) < (birth_date.month, birth_date.day):
        years -= 1
    return years


def counts(decision: Decision, actor: Actor, birth_date: date | None, occurred_at: datetime) -> bool:
    """Whether a decision takes effect: under 13, only a guardian's opt-in counts; an opt-out always
    counts, whoever makes it. Judged on the day the decision was made."""
    if decision is Decision.OPT_OUT or actor is Actor.GUARDIAN or birth_date is None:
        return True
    return age_on(birth_date, occurred_at.date()) >= CHILD_AGE


def fold(rulings: Iterable[tuple[Key, Ruling]]) -> dict[Key, Ruling]:
    """Fold effective events into the state in force: for each key, the ruling of highest precedence.
    Any order of the same events gives the same state; a late event never overturns a newer one."""
    state: dict[Key, Ruling] = {}
    for key, ruling in rulings:
        if ruling.overrides(state.get(key)):
            state[key] = ruling
    return state


def resolve(state: Mapping[Key, Ruling], purpose: str, topic: str | None) -> Ruling | None:
    """The ruling in force for a purpose's topic: the later of the whole-purpose ruling and the topic's.
    With no topic, only the whole-purpose ruling."""
    whole = state.get((purpose, WHOLE_PURPOSE))
    if not topic:
        return whole
    specific = state.get((purpose, topic))
    if specific is None:
        return whole
    return specific if specific.overrides(whole) else whole
