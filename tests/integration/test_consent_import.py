"""`consents import`: historic decisions go through the ledger with their own time, source and
actor; the state they leave does not depend on the order of the rows."""

from __future__ import annotations

import random
from datetime import date

import pytest
from sqlalchemy import delete, func, select

from consent_service.domain.eligibility import Reason
from consent_service.domain.ledger import Actor, Decision, InvalidEventError, Source
from consent_service.models import AddressDecision, ConsentEvent, Patron, PatronDecision, Topic
from consent_service.services import consent_import
from consent_service.services.consent_import import import_consents
from consent_service.services.csv_input import RowProblem
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.standing import load_standings
from tests.conftest import NOW

HEADER = "card_number,purpose,topic,decision,occurred_at,source,actor,note"
GOOD = "1001,photo_video,,opt_out,2025-03-01T09:00:00-07:00,,patron,paper form"


@pytest.fixture
def patrons(session, make_patron):
    session.add(Topic(key="events", name="Events", created_at=NOW))
    session.add(Topic(key="news", name="Library news", created_at=NOW))
    session.commit()
    return {
        "ana": make_patron(card="1001", email="home@example.org"),
        "sam": make_patron(card="1002", email="home@example.org"),  # shares Ana's address
        "lena": make_patron(card="1003", email="lena@example.org"),
        "milo": make_patron(card="3001", email="milo@example.org", birth_date=date(2018, 4, 5)),
    }


def write(tmp_path, *lines, name="consents.csv"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(runner, path, *options):
    return runner.invoke(args=["consents", "import", str(path), *options])


def events(session):
    session.expire_all()
    return session.scalars(select(ConsentEvent).order_by(ConsentEvent.id)).all()


def verdict(session, ctx, patron, purpose, topic=None):
    standing = load_standings(session, [patron])[patron.id]
    return standing.verdict(ctx.catalog.get(purpose), topic, NOW.date())


def test_each_row_is_recorded_with_its_time_source_actor_and_note(runner, session, ctx, patrons,
                                                                 tmp_path):
    result = run(runner, write(
        tmp_path, HEADER, GOOD,
        "1003,email_marketing,events,opt_out,2025-01-02T10:00:00Z,staff_phone,staff,called in"))
    assert result.exit_code == 0, result.output
    assert "recorded 2, already in force 0, already recorded 0, rejected 0" in result.output
    photo, email = events(session)
    assert (photo.purpose, photo.topic, photo.decision, photo.source, photo.actor) == (
        "photo_video", "", "opt_out", "import", "patron")
    assert photo.occurred_at.isoformat() == "2025-03-01T16:00:00+00:00"
    assert photo.evidence == {"note": "paper form", "import_file": "consents.csv", "line": "2"}
    assert (email.topic, email.source, email.actor) == ("events", "staff_phone", "staff")
    assert email.evidence == {"note": "called in", "import_file": "consents.csv", "line": "3"}
    assert verdict(session, ctx, patrons["lena"], "email_marketing", "events").reason is (
        Reason.OPTED_OUT)


@pytest.mark.parametrize(("row", "message"), [
    (",photo_video,,opt_out,2025-03-01T09:00:00Z,,patron,", "card_number is empty"),
    ("9999,photo_video,,opt_out,2025-03-01T09:00:00Z,,patron,", "no patron has card number '9999'"),
    ("1001,mail,,opt_out,2025-03-01T09:00:00Z,,patron,", "unknown purpose 'mail'"),
    ("1001,email_marketing,nope,opt_out,2025-03-01T09:00:00Z,,patron,", "unknown topic 'nope'"),
    ("1001,photo_video,events,opt_out,2025-03-01T09:00:00Z,,patron,",
     "purpose 'photo_video' has no topics"),
    ("1001,photo_video,,maybe,2025-03-01T09:00:00Z,,patron,",
     "decision 'maybe' is not one of: opt_in, opt_out"),
    ("1001,photo_video,,opt_out,2099-03-01T09:00:00Z,,patron,", "occurred_at is in the future"),
    ("1001,photo_video,,opt_out,2025-03-01T09:00:00,,patron,", "occurred_at has no UTC offset"),
    ("1001,photo_video,,opt_out,2025-03-01,,patron,", "occurred_at has no UTC offset"),
    ("1001,photo_video,,opt_out,last tuesday,,patron,",
     "occurred_at is not an ISO 8601 date and time"),
    ("1001,photo_video,,opt_out,2025-03-01T09:00:00Z," + "x" * 65 + ",patron,",
     "source is longer than 64 characters"),
    ("1001,photo_video,,opt_out,2025-03-01T09:00:00Z,,system,",
     "actor 'system' is not one of: patron, guardian, staff"),
    ("1001,photo_video,,opt_out,2025-03-01T09:00:00Z,,,", "actor is empty"),
    ("1001,photo_video", "the row has 2 fields but the header has 8"),
])
def test_a_bad_row_is_reported_with_its_line_and_nothing_is_recorded(runner, session, patrons,
                                                                     tmp_path, row, message):
    result = run(runner, write(tmp_path, HEADER, GOOD, row))
    assert result.exit_code == 1
    assert f"line 3: {message}" in result.output
    assert "recorded 0, already in force 0, already recorded 0, rejected 1" in result.output
    assert "Error: 1 invalid row(s); nothing was written" in result.output
    assert "Traceback" not in result.output
    assert events(session) == []


def test_skip_invalid_records_the_good_rows_and_lists_the_bad(runner, session, patrons, tmp_path):
    result = run(runner, write(tmp_path, HEADER,
                               "1001,photo_video,,opt_out,2025-03-01T09:00:00Z,,robot,", GOOD),
                 "--skip-invalid")
    assert result.exit_code == 0
    assert "line 2: actor 'robot' is not one of: patron, guardian, staff" in result.output
    assert "recorded 1, already in force 0, already recorded 0, rejected 1" in result.output
    assert [e.evidence["line"] for e in events(session)] == ["3"]


def test_running_the_same_file_again_records_nothing_new(runner, session, patrons, tmp_path):
    path = write(tmp_path, HEADER, GOOD,
                 "1003,email_marketing,,opt_out,2025-05-01T10:00:00Z,,patron,",
                 "1003,email_marketing,,opt_in,2024-05-01T10:00:00Z,,patron,")  # overtaken
    assert "recorded 3, already in force 0, already recorded 0" in run(runner, path).output
    recorded = len(events(session))

    again = run(runner, path)
    assert again.exit_code == 0
    assert "recorded 0, already in force 2, already recorded 1, rejected 0" in again.output
    assert len(events(session)) == recorded


def test_a_repeated_line_in_one_file_is_recorded_once(session, ctx, patrons, tmp_path):
    older = "1003,email_marketing,,opt_in,2024-05-01T10:00:00Z,,patron,"
    path = write(tmp_path, HEADER, "1003,email_marketing,,opt_out,2025-05-01T10:00:00Z,,patron,",
                 older, older)
    report = import_consents(session, ctx, path, now=NOW, skip_invalid=False)
    assert report.summary() == "recorded 2, already in force 0, already recorded 1, rejected 0"


def test_a_historic_opt_in_does_not_overturn_a_newer_unsubscribe(runner, session, ctx, patrons,
                                                                tmp_path):
    lena = patrons["lena"]
    record_decision(session, ctx, DecisionRequest(
        purpose="email_marketing", decision=Decision.OPT_OUT, source=Source.ONE_CLICK,
        actor=Actor.PATRON, occurred_at=NOW, patron=lena), now=NOW)
    session.commit()
    result = run(runner, write(tmp_path, HEADER,
                               "1003,email_marketing,,opt_in,2025-01-02T10:00:00Z,,patron,"))
    assert "recorded 1" in result.output  # the ledger keeps it, as history
    lena = session.get(Patron, lena.id)
    assert verdict(session, ctx, lena, "email_marketing").reason is Reason.OPTED_OUT


def test_a_row_the_ledger_refuses_while_recording_leaves_nothing_written(session, ctx, patrons,
                                                                        tmp_path, monkeypatch):
    def refuse_line_3(session, ctx, request, *, now):
        if request.evidence["line"] == "3":
            raise InvalidEventError("refused by the ledger")
        return record_decision(session, ctx, request, now=now)

    monkeypatch.setattr(consent_import, "record_decision", refuse_line_3)
    path = write(tmp_path, HEADER, GOOD, "1003,photo_video,,opt_out,2025-03-01T09:00:00Z,,patron,",
                 "1002,photo_video,,opt_out,2025-03-01T09:00:00Z,,patron,")

    report = import_consents(session, ctx, path, now=NOW, skip_invalid=False)
    assert report.problems == [RowProblem(3, "refused by the ledger")]
    assert report.summary() == "recorded 0, already in force 0, already recorded 0, rejected 1"
    assert events(session) == []

    report = import_consents(session, ctx, path, now=NOW, skip_invalid=True)
    assert report.summary() == "recorded 2, already in force 0, already recorded 0, rejected 1"
    assert [e.evidence["line"] for e in events(session)] == ["2", "4"]


def test_a_header_without_a_required_column_is_refused(runner, session, patrons, tmp_path):
    result = run(runner, write(tmp_path, "card_number,purpose,decision,occurred_at",
                               "1001,photo_video,opt_out,2025-03-01T09:00:00Z"))
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: consents.csv: line 1: missing required column(s): actor; "
        "the header found is 'card_number,purpose,decision,occurred_at'")
    assert events(session) == []


def test_a_misspelt_required_column_is_named_with_the_column_it_looks_like(runner, session,
                                                                          patrons, tmp_path):
    header = HEADER.replace("occurred_at", "occured_at")
    result = run(runner, write(tmp_path, header, GOOD))
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: consents.csv: line 1: missing required column(s): occurred_at "
        f"('occured_at': did you mean 'occurred_at'?); the header found is {header!r}")
    assert events(session) == []


def test_a_misspelt_optional_column_refuses_the_file_unless_allow_partial(runner, session,
                                                                         patrons, tmp_path):
    header = HEADER.replace(",note", ",notes")
    path = write(tmp_path, header, GOOD)
    result = run(runner, path)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: consents.csv: line 1: unknown column(s) that look like misspelt known ones: "
        "'notes': did you mean 'note'?; correct the header, or pass --allow-partial to import "
        f"without them; the header found is {header!r}")
    assert events(session) == []

    result = run(runner, path, "--allow-partial")
    assert result.exit_code == 0, result.output
    assert ("note: ignored, as --allow-partial allows, column(s) that look misspelt: 'notes': "
            "did you mean 'note'?") in result.output
    [event] = events(session)
    assert "note" not in event.evidence


def test_a_file_saved_with_semicolons_imports_as_with_commas(runner, session, patrons, tmp_path):
    header = HEADER.replace(",", ";")
    result = run(runner, write(tmp_path, header, GOOD.replace(",", ";")))
    assert result.exit_code == 0, result.output
    assert "note: columns are separated by semicolons" in result.output
    assert len(events(session)) == 1


def test_columns_no_import_uses_are_listed_and_ignored(runner, session, patrons, tmp_path):
    result = run(runner, write(tmp_path, HEADER + ",form_id,scanned_by", GOOD + ",F-17,jdoe"))
    assert result.exit_code == 0, result.output
    assert "note: ignored column(s) this import does not use: form_id, scanned_by" in result.output
    assert len(events(session)) == 1


@pytest.mark.parametrize(("row", "message"), [
    ("1001,photo_video,,opt_out,2025-03-01T09:00:00Z,,patron,paper\x00form",
     "note contains a character that is not allowed: U+0000 (control character)"),
    ("1001,photo_video,,opt_out,2025-03-01T09:00:00Z,,patron,\u202emrof repap",
     "note contains a character that is not allowed: U+202E (RIGHT-TO-LEFT OVERRIDE)"),
    ("10\x0001,photo_video,,opt_out,2025-03-01T09:00:00Z,,patron,",
     "card_number contains a character that is not allowed: U+0000 (control character)"),
    ("1001,email_marketing,eve\x00nts,opt_out,2025-03-01T09:00:00Z,,patron,",
     "topic contains a character that is not allowed: U+0000 (control character)"),
    ("1001,photo\u2066_video,,opt_out,2025-03-01T09:00:00Z,,patron,",
     "purpose contains a character that is not allowed: U+2066 (LEFT-TO-RIGHT ISOLATE)"),
    ("1001,photo_video,,opt_out\x1b,2025-03-01T09:00:00Z,,patron,",
     "decision contains a character that is not allowed: U+001B (control character)"),
    ("1001,photo_video,,opt_out,2025-03-01T09:00:00Z\x00,,patron,",
     "occurred_at contains a character that is not allowed: U+0000 (control character)"),
    ("1001,photo_video,,opt_out,2025-03-01T09:00:00Z,staff\x00_desk,patron,",
     "source contains a character that is not allowed: U+0000 (control character)"),
    ("1001,photo_video,,opt_out,2025-03-01T09:00:00Z,,pat\x00ron,",
     "actor contains a character that is not allowed: U+0000 (control character)"),
])
def test_a_control_character_or_bidi_override_rejects_the_row_naming_column_and_character(
        runner, session, patrons, tmp_path, row, message):
    result = run(runner, write(tmp_path, HEADER, GOOD, row))
    assert result.exit_code == 1
    assert [line for line in result.output.splitlines() if line.startswith("line ")] == [
        f"line 3: {message}"]  # and no other problem for the value it refused
    assert "Error: 1 invalid row(s); nothing was written" in result.output
    assert "Traceback" not in result.output
    assert events(session) == []


def test_a_note_keeps_its_line_breaks_in_one_form(session, ctx, patrons, tmp_path):
    path = write(tmp_path, HEADER, GOOD.replace("paper form", '"paper form\r\nsigned\tat desk"'))
    report = import_consents(session, ctx, path, now=NOW, skip_invalid=False)
    assert report.summary() == "recorded 1, already in force 0, already recorded 0, rejected 0"
    [event] = events(session)
    assert event.evidence["note"] == "paper form\nsigned\tat desk"


def test_progress_is_reported_once_per_data_row(session, ctx, patrons, tmp_path):
    ticks = []
    path = write(tmp_path, HEADER, GOOD, "9999,photo_video,,opt_out,2025-03-01T09:00:00Z,,patron,")
    for skip in (False, True):
        ticks.clear()
        import_consents(session, ctx, path, now=NOW, skip_invalid=skip,
                        on_row=lambda: ticks.append(1))
        assert len(ticks) == 2


# Decisions whose file order is not their time order: applying "the last row wins" would differ.
HISTORY = [
    "1001,email_marketing,,opt_out,2025-02-01T10:00:00Z,unsubscribe_link,patron,",
    "1002,email_marketing,,opt_in,2025-01-01T10:00:00Z,preference_center,patron,",  # same address
    "1001,email_marketing,events,opt_in,2025-03-01T10:00:00Z,preference_center,patron,",
    "1001,email_marketing,events,opt_out,2025-01-15T10:00:00Z,,patron,",
    "1002,email_marketing,news,opt_out,2025-04-01T10:00:00+02:00,,staff,",
    "1002,email_marketing,news,opt_in,2025-04-01T08:00:00Z,,patron,",  # the same instant
    "1003,postal_marketing,,opt_in,2025-06-01T00:00:00Z,,patron,",
    "1003,postal_marketing,,opt_out,2024-06-01T00:00:00Z,,staff,",
    "1003,photo_video,,opt_out,2025-01-01T00:00:00Z,,patron,",
    "1003,photo_video,,opt_in,2025-01-02T00:00:00Z,,patron,",
    "3001,child_programs,,opt_in,2025-05-01T00:00:00Z,guardian_page,guardian,",
    "3001,child_programs,,opt_out,2025-04-01T00:00:00Z,,patron,",
    "3001,email_marketing,,opt_in,2025-05-02T00:00:00Z,,patron,",  # a child's own: no effect
    "3001,email_marketing,,opt_out,2025-03-02T00:00:00Z,,guardian,",
]


def _state(session):
    session.expire_all()
    cards = dict(session.execute(select(Patron.id, Patron.card_number)).all())
    own = {(cards[r.patron_id], r.purpose, r.topic): (r.decision, r.actor, r.occurred_at)
           for r in session.scalars(select(PatronDecision))}
    shared = {(r.address_key, r.purpose, r.topic): (r.decision, r.actor, r.occurred_at)
              for r in session.scalars(select(AddressDecision))}
    return own, shared


def _forget_all_decisions(session):
    for model in (PatronDecision, AddressDecision):
        session.execute(delete(model))
    session.execute(delete(ConsentEvent))
    session.commit()


def test_the_same_rows_in_any_order_leave_the_same_decisions_in_force(session, ctx, patrons,
                                                                      tmp_path):
    in_order = write(tmp_path, HEADER, *HISTORY, name="in_order.csv")
    shuffled_rows = random.Random(20260601).sample(HISTORY, len(HISTORY))
    assert shuffled_rows != HISTORY
    shuffled = write(tmp_path, HEADER, *shuffled_rows, name="shuffled.csv")

    import_consents(session, ctx, in_order, now=NOW, skip_invalid=False)
    first = _state(session)
    _forget_all_decisions(session)
    assert session.scalar(select(func.count()).select_from(PatronDecision)) == 0
    import_consents(session, ctx, shuffled, now=NOW, skip_invalid=False)
    assert _state(session) == first

    own, shared = first
    home = ctx.address_key("home@example.org")
    assert shared[(home, "email_marketing", "")][0] == "opt_out"
    assert shared[(home, "email_marketing", "events")][0] == "opt_in"
    assert shared[(home, "email_marketing", "news")][0] == "opt_out"  # same instant: opt-out wins
    assert own[("1003", "postal_marketing", "")][0] == "opt_in"
    assert own[("1003", "photo_video", "")][0] == "opt_in"
    assert own[("3001", "child_programs", "")][:2] == ("opt_in", "guardian")
    assert own[("3001", "email_marketing", "")][:2] == ("opt_out", "guardian")
