"""The photo roster: from an event's sign-in card numbers, who must not be photographed or filmed."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service.domain import ConsentServiceError
from consent_service.domain.eligibility import Reason
from consent_service.domain.purposes import PurposeKey
from consent_service.domain.text import UnsafeTextError, clean_text
from consent_service.models import Patron
from consent_service.services.access_log import Access, log_access
from consent_service.services.context import ServiceContext
from consent_service.services.csv_input import sniff_delimiter
from consent_service.services.standing import load_standings

ROSTER_LIMIT = 2000  # card numbers in one roster: far more than any event's sign-in sheet
CARD_COLUMN = "card_number"
_SEPARATORS = re.compile(r"[\s,;]+")
_CHUNK = 500


class RosterError(ConsentServiceError):
    """A roster that cannot be read; the message says why in one line."""


@dataclass(frozen=True)
class RosterEntry:
    """A patron who must not be photographed, as staff at the event need them: first name, the
    last name's initial, the card number, and why."""

    card_number: str
    first_name: str
    last_initial: str
    reason: Reason


@dataclass(frozen=True)
class Roster:
    """The answer for one sign-in sheet."""

    do_not_photograph: list[RosterEntry]
    may_photograph: int
    unknown: list[str]  # card numbers no patron has, in the order given

    @property
    def checked(self) -> int:
        return len(self.do_not_photograph) + self.may_photograph + len(self.unknown)


def read_card_numbers(*texts: str) -> list[str]:
    """The card numbers in pasted text and uploaded files, once each, in the order given: a text
    whose first line names a `card_number` column is a CSV (commas, semicolons or tabs, as
    `open_table` reads) and gives that column; any other text
    is card numbers separated by line breaks, commas, semicolons or spaces.

    :raise RosterError: for a control character, or more than ROSTER_LIMIT card numbers.
    """
    cells: list[str] = []
    for text in texts:
        cells += _cells(text)
    cards = list(dict.fromkeys(cell.strip() for cell in cells if cell.strip()))
    if len(cards) > ROSTER_LIMIT:
        raise RosterError(f"a roster holds at most {ROSTER_LIMIT} card numbers; this one has "
                          f"{len(cards)}")
    return cards


def _cells(text: str) -> list[str]:
    try:
        text = clean_text(text.lstrip("\ufeff"), field="the list of card numbers", multiline=True)
    except UnsafeTextError as error:
        raise RosterError(str(error)) from None
    lines = text.splitlines()
    delimiter = sniff_delimiter(lines[0]) if lines else ","
    header = [cell.strip().lower()
              for cell in next(csv.reader(lines[:1], delimiter=delimiter), [])]
    if CARD_COLUMN not in header:
        return _SEPARATORS.split(text)
    column = header.index(CARD_COLUMN)
    return [row[column] if column < len(row) else ""
            for row in csv.reader(io.StringIO("\n".join(lines[1:])), delimiter=delimiter)]


def check_roster(session: Session, ctx: ServiceContext, cards: list[str], *, staff_id: int,
                 now: datetime) -> Roster:
    """Who of these patrons must not be photographed today: everyone the eligibility function
    does not allow for photo_video (they declined; a child under 13 without a guardian's consent;
    an inactive card; no yes where photos need one), in the order given. Each patron found is
    written to the access log ("photo_roster"); commits.

    :raise RosterError: for an empty roster.
    """
    if not cards:
        raise RosterError("enter or upload at least one card number")
    purpose = ctx.catalog.get(PurposeKey.PHOTO_VIDEO)
    found: dict[str, Patron] = {}
    for start in range(0, len(cards), _CHUNK):
        chunk = cards[start:start + _CHUNK]
        found.update((p.card_number, p) for p in session.scalars(
            select(Patron).where(Patron.card_number.in_(chunk))))
    standings = load_standings(session, found.values(), purposes=[purpose.key])
    today = ctx.today(now)
    refused, allowed = [], 0
    for card in cards:
        patron = found.get(card)
        if patron is None:
            continue
        verdict = standings[patron.id].verdict(purpose, None, today)
        if verdict.allowed:
            allowed += 1
        else:
            refused.append(RosterEntry(card, patron.first_name, patron.last_name[:1],
                                       verdict.reason or Reason.OPTED_OUT))
    log_access(session, staff_id, [p.id for p in found.values()], Access.PHOTO_ROSTER, now=now)
    session.commit()
    return Roster(refused, allowed, [card for card in cards if card not in found])
