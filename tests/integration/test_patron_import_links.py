"""The import's guardian links, whichever way the database takes them (PostgreSQL: one INSERT … ON
CONFLICT DO NOTHING RETURNING a chunk; SQLite: the links that exist looked up, the others inserted
and read back): the links made are exactly those the rows name that the database lacks, in the
order the rows name them, each given back with its id as stored, and the children that gained one
are exactly those with a link made, in the rows' order. The rule is checked here row by row in
Python, against random links already stored, random rows and chunk sizes."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from consent_service.extensions import db
from consent_service.models import GuardianLink, Patron
from consent_service.services import patron_import
from consent_service.services.patron_import import _link_guardians, _PatronRow, _Stored
from tests.conftest import NOW

CARDS = ("1", "2", "3", "4")
EMAILS = ("a@example.org", "b@example.org")

stored_links = st.sets(st.tuples(st.sampled_from(CARDS),
                                 st.one_of(st.sampled_from(CARDS), st.sampled_from(EMAILS))),
                       max_size=8).map(lambda links: {link for link in links if link[0] != link[1]})
rows = st.lists(st.tuples(st.sampled_from(CARDS),
                          st.one_of(st.none(), st.sampled_from(CARDS)),
                          st.one_of(st.none(), st.sampled_from(EMAILS)))
                .filter(lambda row: row[0] != row[1]),  # the import rejects a child's own card
                max_size=4, unique_by=lambda row: row[0])  # and a card's repeats


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=stored_links, file_rows=rows, chunk=st.integers(min_value=1, max_value=3))
def test_links_made_are_those_named_and_missing_in_the_rows_order(
        session, monkeypatch, before, file_rows, chunk):
    for table in reversed(db.metadata.sorted_tables):
        session.execute(table.delete())
    session.expunge_all()  # the previous example's objects
    patrons = {card: Patron(card_number=card, first_name="Ana", created_at=NOW, updated_at=NOW)
               for card in CARDS}
    session.add_all(patrons.values())
    session.flush()
    ids = {card: patron.id for card, patron in patrons.items()}
    for child, guardian in before:
        by_card = guardian in ids
        session.add(GuardianLink(child_id=ids[child], created_at=NOW,
                                 guardian_id=ids[guardian] if by_card else None,
                                 guardian_email=None if by_card else guardian))
    session.commit()

    # The rule, row by row: a link is made where the database (or an earlier row) lacks it.
    have = {(ids[child], guardian) for child, guardian in before}
    expected_links: list[tuple[int, int | None, str | None]] = []
    expected_gained: list[str] = []
    for card, guardian_card, guardian_email in file_rows:
        child = ids[card]
        before_row = len(expected_links)
        if guardian_card and (child, guardian_card) not in have:
            have.add((child, guardian_card))
            expected_links.append((child, ids[guardian_card], None))
        if guardian_email and (child, guardian_email) not in have:
            have.add((child, guardian_email))
            expected_links.append((child, None, guardian_email))
        if len(expected_links) > before_row:
            expected_gained.append(card)

    monkeypatch.setattr(patron_import, "CHUNK", chunk)
    parsed = [_PatronRow(line, card, {}, guardian_card, guardian_email)
              for line, (card, guardian_card, guardian_email) in enumerate(file_rows, start=2)]
    created: list = []
    gained = _link_guardians(session, parsed, {card: _Stored(ids[card], None) for card in CARDS},
                             NOW, created)

    assert gained == expected_gained
    assert [(link.child_id, link.guardian_id, link.guardian_email)
            for link in created] == expected_links
    stored = {link.public_id: (link.id, link.child_id, link.guardian_id, link.guardian_email)
              for link in session.scalars(select(GuardianLink))}
    for link in created:
        assert stored[link.public_id] == (link.id, link.child_id, link.guardian_id,
                                          link.guardian_email)
    assert len(stored) == len(before) + len(expected_links)
    session.rollback()
