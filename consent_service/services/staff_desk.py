"""What staff at a desk or on the phone do for a patron: find them, and record what they told us."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from consent_service.domain import ConsentServiceError
from consent_service.domain.addresses import normalize_email
from consent_service.domain.ledger import STAFF_SOURCES, Actor, Decision, Source
from consent_service.domain.purposes import PATRON_PURPOSES
from consent_service.domain.text import clean_text
from consent_service.models import Patron
from consent_service.services.context import ServiceContext
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.guardians.staff import record_id_check
from consent_service.services.staff_accounts import StaffMember

SEARCH_LIMIT = 50  # a name search shows at most this many patrons; staff narrow it down
SEARCH_TEXT_LIMIT = 200
NOTE_LIMIT = 1000


class StaffDeskError(ConsentServiceError):
    """A search or a decision staff cannot make as asked; the message says why in one line."""


class PatronRecordNotFoundError(ConsentServiceError):
    """No patron has that public id."""


@dataclass(frozen=True)
class PatronHit:
    """A patron found by a search, as the results list shows them."""

    public_id: str
    card_number: str
    first_name: str
    last_name: str
    status: str


@dataclass(frozen=True)
class SearchResult:
    """The patrons found (at most SEARCH_LIMIT), and whether more matched than are shown."""

    hits: list[PatronHit]
    more: bool = False


def search_patrons(session: Session, ctx: ServiceContext, text: str) -> SearchResult:
    """Patrons matching `text`, each found through an index, never by reading every patron: text
    with an @ is an email address (every patron at it, by the address's keyed hash); otherwise the
    card number (exactly) and then the names: each word must begin the first or the last name,
    case-insensitively (on SQLite only ASCII letters change case). Ordered by last name, first
    name. Reads only.

    :raise StaffDeskError: for text that is too long or holds a control character.
    :raise InvalidEmailError: for text with an @ that is not an email address.
    """
    text = _cleaned(text, "the search", SEARCH_TEXT_LIMIT).strip()
    if not text:
        return SearchResult([])
    order = (Patron.last_name, Patron.first_name, Patron.id)
    if "@" in text:
        key = ctx.address_key(normalize_email(text, strict=False))
        found = list(session.scalars(select(Patron).where(Patron.address_key == key)
                                     .order_by(*order).limit(SEARCH_LIMIT + 1)))
        return _result(found)
    by_card = session.scalar(select(Patron).where(Patron.card_number == text))
    words = [_like_prefix(word.lower()) for word in text.split()[:5]]
    by_name = list(session.scalars(
        select(Patron).where(and_(*(_name_begins(word) for word in words)))
        .order_by(*order).limit(SEARCH_LIMIT + 1)))
    found = [by_card] if by_card is not None else []
    return _result(found + [p for p in by_name if by_card is None or p.id != by_card.id])


def _name_begins(pattern: str) -> ColumnElement[bool]:
    return or_(func.lower(Patron.first_name).like(pattern, escape="\\"),
               func.lower(Patron.last_name).like(pattern, escape="\\"))


def _like_prefix(word: str) -> str:
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def _result(found: list[Patron]) -> SearchResult:
    hits = [PatronHit(p.public_id, p.card_number, p.first_name, p.last_name, p.status)
            for p in found[:SEARCH_LIMIT]]
    return SearchResult(hits, more=len(found) > SEARCH_LIMIT)


def patron_by_public_id(session: Session, public_id: str) -> Patron:
    """The patron with this public id, or PatronRecordNotFoundError."""
    patron = session.scalar(select(Patron).where(Patron.public_id == public_id))
    if patron is None:
        raise PatronRecordNotFoundError(f"no patron with id {public_id!r}")
    return patron


@dataclass(frozen=True)
class StaffDecision:
    """What a patron told staff: a decision on a purpose (and email topic), and how they told us."""

    purpose: str
    decision: Decision
    source: Source
    topic: str | None = None
    note: str = ""


@dataclass(frozen=True)
class StaffRecorded:
    """What recording did: whether an event was written, and whether it is in force (a child's
    opt-in made through staff is recorded but does not count: only a guardian's does)."""

    written: bool
    effective: bool


def record_for_patron(session: Session, ctx: ServiceContext, public_id: str,
                      request: StaffDecision, *, staff: StaffMember,
                      now: datetime) -> StaffRecorded:
    """Record, through record_decision, what a patron told staff: actor staff, `actor_ref` the
    staff member's id, evidence their email and the note; the decision occurs now. Only the
    purposes a patron decides (a guardian decides the others, on the family page or after an ID
    check), and only the staff sources (desk, phone, email, paper form). Commits.

    :raise StaffDeskError: for a purpose a patron does not decide, a source that is not a staff
        source, or a note that is too long or holds a control character.
    :raise PatronRecordNotFoundError: for an unknown patron.
    :raise UnknownPurposeError, UnknownTopicError, InvalidEventError: as record_decision does.
    """
    if request.purpose not in PATRON_PURPOSES:
        ctx.catalog.get(request.purpose)  # an unknown key gets the catalog's own message
        raise StaffDeskError(f"{request.purpose} is a guardian's decision: record it on the "
                             "guardian's family page, or after an ID check")
    if request.source not in STAFF_SOURCES:
        raise StaffDeskError(f"{request.source} is not a way a patron tells staff; choose one of "
                             f"{', '.join(STAFF_SOURCES)}")
    note = _cleaned(request.note, "the note", NOTE_LIMIT, multiline=True).strip()
    patron = patron_by_public_id(session, public_id)
    evidence = {"staff": staff.email, **({"note": note} if note else {})}
    recorded = record_decision(session, ctx, DecisionRequest(
        purpose=request.purpose, topic=request.topic or None, decision=request.decision,
        source=request.source, actor=Actor.STAFF, occurred_at=now, patron=patron,
        actor_ref=str(staff.id), evidence=evidence), now=now)
    outcome = StaffRecorded(recorded.written,
                            recorded.event is not None and recorded.event.effective)
    session.commit()
    return outcome


def _cleaned(text: str, field: str, limit: int, *, multiline: bool = False) -> str:
    if len(text) > limit:
        raise StaffDeskError(f"{field} is longer than {limit} characters")
    try:
        return clean_text(text, field=field, multiline=multiline)
    except ConsentServiceError as error:
        raise StaffDeskError(str(error)) from None


def record_guardian_id_check(session: Session, ctx: ServiceContext, public_id: str, *,
                             guardian: str, purpose: str, staff: StaffMember,
                             now: datetime) -> None:
    """Record, for the child with this public id, a guardian's consent to vendor sharing given in
    person after `staff` checked the guardian's ID: guardians.staff.record_id_check (actor the
    guardian, the staff member's email as evidence, a confirmation to the guardian). Commits.

    :raise PatronRecordNotFoundError: for an unknown child.
    :raise GuardianError: as record_id_check does.
    """
    child = patron_by_public_id(session, public_id)
    record_id_check(session, ctx, child.card_number, guardian=guardian, purpose=purpose,
                    staff=staff.email, now=now)
