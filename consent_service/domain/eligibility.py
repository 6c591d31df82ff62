"""The one eligibility function: may the library contact or use this patron for this purpose today?"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from consent_service.domain.ledger import Actor, Decision, Key, Ruling, age_on, resolve
from consent_service.domain.purposes import Basis, Channel, Purpose


class Reason(StrEnum):
    """Why a patron is left out; exactly one is given, the first that applies in this order."""

    INACTIVE = "inactive"
    NO_EMAIL = "no_email"
    NO_POSTAL_ADDRESS = "no_postal_address"
    ADDRESS_UNDELIVERABLE = "address_undeliverable"
    ADDRESS_SUPPRESSED = "address_suppressed"
    OPTED_OUT = "opted_out"
    GUARDIAN_CONSENT_REQUIRED = "guardian_consent_required"
    NOT_OPTED_IN = "not_opted_in"


@dataclass(frozen=True)
class PatronFacts:
    """What eligibility needs to know about a patron record (nothing that identifies them)."""

    active: bool
    birth_date: date | None
    has_email: bool
    has_postal_address: bool


@dataclass(frozen=True)
class AddressStatus:
    """What SendGrid told us about the patron's email address."""

    suppressed: bool = False  # a spam report, until someone at the address opts back in
    undeliverable: bool = False  # a hard bounce or an invalid address


DELIVERABLE = AddressStatus()


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: Reason | None = None


ALLOWED = Verdict(True)


def evaluate(
    purpose: Purpose,
    topic: str | None,
    facts: PatronFacts,
    patron_state: Mapping[Key, Ruling],
    address_state: Mapping[Key, Ruling],
    address: AddressStatus,
    today: date,
) -> Verdict:
    """Decide one patron for one purpose (and topic) on `today`.

    Email decisions belong to the address (`address_state`); every other decision, and a guardian's
    consent for a child, belongs to the patron record (`patron_state`). A patron with no birth date is
    treated as an adult. The checks, in order: inactive; the channel (an email address that is present,
    deliverable and not suppressed; a complete postal address); an opt-out in force; for a patron under
    the purpose's age, an opt-out on their own record or else a guardian's opt-in on it (an address-level
    opt-in is not a guardian's consent); an opt-in for an opt-in purpose.
    """
    if not facts.active:
        return Verdict(False, Reason.INACTIVE)
    if purpose.channel is Channel.EMAIL:
        if not facts.has_email:
            return Verdict(False, Reason.NO_EMAIL)
        if address.undeliverable:
            return Verdict(False, Reason.ADDRESS_UNDELIVERABLE)
        if address.suppressed:
            return Verdict(False, Reason.ADDRESS_SUPPRESSED)
    elif purpose.channel is Channel.POSTAL and not facts.has_postal_address:
        return Verdict(False, Reason.NO_POSTAL_ADDRESS)

    own = resolve(patron_state, purpose.key, topic)
    in_force = resolve(address_state, purpose.key, topic) if purpose.channel is Channel.EMAIL else own
    if _says(in_force, Decision.OPT_OUT):
        return Verdict(False, Reason.OPTED_OUT)

    if facts.birth_date is not None and age_on(facts.birth_date, today) < purpose.guardian_opt_in_under:
        if _says(own, Decision.OPT_OUT):
            return Verdict(False, Reason.OPTED_OUT)
        if own is None or own.actor is not Actor.GUARDIAN:
            return Verdict(False, Reason.GUARDIAN_CONSENT_REQUIRED)
        return ALLOWED
    if purpose.basis is Basis.OPT_IN and not _says(in_force, Decision.OPT_IN):
        return Verdict(False, Reason.NOT_OPTED_IN)
    return ALLOWED


def born_after(age: int, today: date) -> date:
    """The set-based form of the age rule: a patron is under `age` on `today` exactly when born
    after the date returned (`age_on(birth_date, today) < age`), so a query can compare birth
    dates with one value instead of counting each patron's age. A 29 February `today` with no 29
    February `age` years before gives the 28th (born on 1 March of that year: still under age)."""
    year = today.year - age
    day = today.day if (today.month, today.day) != (2, 29) or calendar.isleap(year) else 28
    return date(year, today.month, day)


def _says(ruling: Ruling | None, decision: Decision) -> bool:
    return ruling is not None and ruling.decision is decision
