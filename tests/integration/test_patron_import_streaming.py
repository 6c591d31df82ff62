"""The patron import reads, checks and writes a file a chunk at a time: whatever the chunk size, it
rejects exactly the rows (with the same messages) that checking the whole file at once rejects,
writes the others, links their guardians, and writes nothing when a later line is not CSV."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from consent_service.extensions import db
from consent_service.models import GuardianLink, Patron
from consent_service.services import patron_import
from consent_service.services.csv_input import ImportFileError
from consent_service.services.patron_import import check_patron_rows, import_patrons, record_row
from tests.conftest import NOW

HEADER = ("card_number", "first_name", "birth_date", "guardian_card_number")
IN_DATABASE = ("9001", "9002")
CARDS = ("1", "2", "3", "4", "5", "6")  # few, so that cards repeat and guardians loop
GUARDIANS = (*CARDS, *IN_DATABASE, "7777")  # 7777: nobody's card

rows = st.lists(st.fixed_dictionaries({
    "card_number": st.sampled_from(CARDS),
    "first_name": st.sampled_from(["Ana", "Sam"]),
    "birth_date": st.sampled_from(["", "2015-04-01", "1980-01-02", "not a date"]),
    "guardian_card_number": st.one_of(st.just(""), st.sampled_from(GUARDIANS)),
}), min_size=1, max_size=10)


def start_with_two_patrons(session):
    for table in reversed(db.metadata.sorted_tables):
        session.execute(table.delete())
    for card in IN_DATABASE:
        session.add(Patron(card_number=card, first_name="Guardian", created_at=NOW,
                           updated_at=NOW))
    session.commit()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(file_rows=rows, chunk=st.integers(min_value=1, max_value=4))
def test_chunks_reject_what_checking_the_whole_file_rejects_and_write_the_rest(
        session, ctx, tmp_path, monkeypatch, file_rows, chunk):
    start_with_two_patrons(session)
    path = tmp_path / "patrons.csv"
    path.write_text("\n".join([",".join(HEADER)] + [",".join(row[c] for c in HEADER)
                                                    for row in file_rows]) + "\n",
                    encoding="utf-8")
    whole = check_patron_rows(session, ctx, [record_row(line, row) for line, row
                                             in enumerate(file_rows, start=2)], now=NOW)
    expected = {line: "; ".join(problems) for line, problems in whole.problems().items()}
    good = {row.card: row for row in whole.rows if not row.problems}
    session.rollback()

    monkeypatch.setattr(patron_import, "CHUNK", chunk)
    report = import_patrons(session, ctx, path, now=NOW, skip_invalid=True)

    assert {problem.line: problem.message for problem in report.problems} == expected
    assert [problem.line for problem in report.problems] == sorted(expected)
    assert report.created == len(good)
    session.expire_all()
    cards = set(session.scalars(select(Patron.card_number)))
    assert cards == set(IN_DATABASE) | set(good)
    ids = dict(session.execute(select(Patron.card_number, Patron.id)).all())
    links = set(session.execute(select(GuardianLink.child_id, GuardianLink.guardian_id)).all())
    assert links == {(ids[card], ids[row.guardian_card]) for card, row in good.items()
                     if row.guardian_card and row.guardian_card != card}


def test_a_line_that_is_not_csv_after_rows_were_written_leaves_nothing_written(
        session, ctx, tmp_path, monkeypatch):
    monkeypatch.setattr(patron_import, "CHUNK", 2)
    path = tmp_path / "patrons.csv"
    lines = ["card_number,first_name", *(f"{1000 + n},Ana" for n in range(5)), '1009,"Sam']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    try:
        import_patrons(session, ctx, path, now=NOW, skip_invalid=True, allow_partial=True)
    except ImportFileError as exc:
        assert "line 7" in str(exc)
    else:
        raise AssertionError("an unclosed quote must refuse the file")
    session.expire_all()
    assert session.scalars(select(Patron.card_number)).all() == []
