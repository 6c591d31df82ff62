"""`patrons import`: the ILS's CSV file creates and updates patrons, links guardians, and never
changes a consent decision."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from consent_service.domain.eligibility import Reason
from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.models import AddressDecision, ConsentEvent, GuardianLink, Patron
from consent_service.services.csv_input import ImportFileError
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.patron_import import import_patrons
from consent_service.services.standing import load_standings
from tests.conftest import NOW

HEADER = ("card_number,first_name,last_name,email,birth_date,preferred_language,street,city,state,"
          "postal_code,guardian_card_number,guardian_email,status")
ANA = "1001,Ana,Reyes,Ana.Reyes@Example.org,1980-01-02,es,1 Main St,Denver,CO,80202,,,active"
SAM = "1002,Sam,Okafor,sam@example.org,1979-03-03,en,2 Elm St,Denver,CO,80203,,,"


def write(tmp_path, *lines, name="patrons.csv"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(runner, path, *options):
    return runner.invoke(args=["patrons", "import", str(path), *options])


def patron(session, card):
    session.expire_all()
    return session.scalar(select(Patron).where(Patron.card_number == card))


def count(session, model):
    session.expire_all()
    return session.scalar(select(func.count()).select_from(model))


def test_import_creates_patrons_with_normalised_email_and_defaults(runner, session, ctx, tmp_path):
    result = run(runner, write(tmp_path, HEADER, ANA, SAM))
    assert result.exit_code == 0
    assert "created 2, updated 0, unchanged 0, rejected 0" in result.output
    ana = patron(session, "1001")
    assert (ana.first_name, ana.last_name, ana.birth_date, ana.preferred_language, ana.status) == (
        "Ana", "Reyes", date(1980, 1, 2), "es", "active")
    assert ana.email == "ana.reyes@example.org"
    assert ana.address_key == ctx.address_key("ana.reyes@example.org")
    assert (ana.street, ana.city, ana.state, ana.postal_code) == (
        "1 Main St", "Denver", "CO", "80202")
    assert patron(session, "1002").status == "active"  # empty status means active


def test_empty_language_means_english_and_case_is_forgiven(session, ctx, tmp_path):
    path = write(tmp_path, "card_number,preferred_language,status", "1,,", "2,ES,Inactive")
    import_patrons(session, ctx, path, now=NOW, skip_invalid=False)
    assert patron(session, "1").preferred_language == "en"
    second = patron(session, "2")
    assert (second.preferred_language, second.status) == ("es", "inactive")


def test_created_and_updated_times_are_the_import_time(session, ctx, tmp_path):
    import_patrons(session, ctx, write(tmp_path, HEADER, ANA), now=NOW, skip_invalid=False)
    later = NOW + timedelta(days=3)
    changed = ANA.replace(",Reyes,", ",Reyes Luna,")
    report = import_patrons(session, ctx, write(tmp_path, HEADER, changed), now=later,
                            skip_invalid=False)
    assert report.summary() == "created 0, updated 1, unchanged 0, rejected 0"
    ana = patron(session, "1001")
    assert (ana.last_name, ana.created_at, ana.updated_at) == ("Reyes Luna", NOW, later)


def test_importing_the_same_file_twice_changes_nothing(runner, session, ctx, tmp_path):
    milo = "1003,Milo,Okafor,,2018-04-05,,,,,,1002,Grandma@Example.org,"
    path = write(tmp_path, HEADER, ANA, SAM, milo)
    first = import_patrons(session, ctx, path, now=NOW, skip_invalid=False)
    assert first.summary() == "created 3, updated 0, unchanged 0, rejected 0"
    links = count(session, GuardianLink)

    again = run(runner, path)
    assert again.exit_code == 0
    assert "created 0, updated 0, unchanged 3, rejected 0" in again.output
    assert count(session, GuardianLink) == links == 2
    assert {patron(session, card).updated_at for card in ("1001", "1002", "1003")} == {NOW}


@pytest.mark.parametrize(("row", "message"), [
    (",Nobody,,,,,,,,,,,", "card_number is empty"),
    ("2001,Bad,Date,,1990-13-01,,,,,,,,", "birth_date is not a date written YYYY-MM-DD"),
    ("2001,Bad,Date,,01/02/1990,,,,,,,,", "birth_date is not a date written YYYY-MM-DD"),
    ("2001,Not,Born,,2030-01-01,,,,,,,,", "birth_date is in the future"),
    ("2001,Bad,Email,no-at-sign.example.org,,,,,,,,,", "email: not a valid email address"),
    ("2001,Bad,Lang,,,fr,,,,,,,", "preferred_language 'fr' is not one of: en, es"),
    ("2001,Bad,Status,,,,,,,,,,gone", "status 'gone' is not one of: active, inactive"),
    ("1001,Ana,Again,,,,,,,,,,", "card_number already appears on line 2"),
    ("2001,Own,Guardian,,,,,,,,2001,,", "guardian_card_number is the patron's own card"),
    ("2001,Lost,Guardian,,,,,,,,9999,,",
     "guardian_card_number is no patron in the database or in this file"),
    ("2001,Bad,Guardian,,,,,,,,,mum@,", "guardian_email: not a valid email address"),
    ("2001,Formula,Email,\"=cmd|'/Ccalc'!A0@example.org\",,,,,,,,,",
     "email: not a valid email address: the part before the @-sign must start with a letter or a "
     "digit"),
    ("2001,Odd,Email,a&b@example.org,,,,,,,,,", "email: not a valid email address: the part "
     "before the @-sign may hold only letters, digits and . _ - + ' (not '&')"),
    ("2001,Formula,Guardian,,,,,,,,,-mum@example.org,",
     "guardian_email: not a valid email address: the part before the @-sign must start"),
    ("2001," + "x" * 201 + ",Long,,,,,,,,,,", "first_name is longer than 200 characters"),
    ("2001,Long,Code,,,,,,,123456789012345678901,,,", "postal_code is longer than 20 characters"),
    ("2001,Short,Row", "the row has 3 fields but the header has 13"),
])
def test_a_bad_row_is_reported_with_its_line_and_nothing_is_written(runner, session, tmp_path,
                                                                    row, message):
    result = run(runner, write(tmp_path, HEADER, ANA, row))
    assert result.exit_code == 1
    assert f"line 3: {message}" in result.output
    assert "Error: 1 invalid row(s); nothing was written" in result.output
    assert "created 0, updated 0, unchanged 0, rejected 1" in result.output
    assert "Traceback" not in result.output
    assert count(session, Patron) == 0


@pytest.mark.parametrize(("row", "message"), [
    ("2001,Ana\x00,Reyes,,,,,,,,,,",
     "first_name contains a character that is not allowed: U+0000 (control character)"),
    ('2001,Ana,"Reyes\r\nBcc: all@example.org",,,,,,,,,,',
     "last_name contains a character that is not allowed: U+000D (control character)"),
    ("2001,Ana,\u202eseyeR,,,,,,,,,,",
     "last_name contains a character that is not allowed: U+202E (RIGHT-TO-LEFT OVERRIDE)"),
    ("2001,Ana,Reyes,,,,1 Main St\x00,,,,,,",
     "street contains a character that is not allowed: U+0000 (control character)"),
    ("2001,Ana,Reyes,,,,,Den\x85ver,,,,,",
     "city contains a character that is not allowed: U+0085 (control character)"),
    ("2001,Ana,Reyes,,,,,,C\tO,,,,",
     "state contains a character that is not allowed: U+0009 (control character)"),
    ("20\x0001,Ana,Reyes,,,,,,,,,,",
     "card_number contains a character that is not allowed: U+0000 (control character)"),
    ("2001,Ana,Reyes,,,,,,,,10\u202e02,,",
     "guardian_card_number contains a character that is not allowed: U+202E"),
    ("2001,Ana,Reyes,ana\x00@example.org,,,,,,,,,",
     "email contains a character that is not allowed: U+0000 (control character)"),
    ("2001,Ana,Reyes,,,e\x00n,,,,,,,",
     "preferred_language contains a character that is not allowed: U+0000"),
])
def test_a_control_character_or_bidi_override_rejects_the_row_naming_column_and_character(
        runner, session, tmp_path, row, message):
    result = run(runner, write(tmp_path, HEADER, ANA, row))
    assert result.exit_code == 1
    [rejected] = [line for line in result.output.splitlines() if line.startswith("line ")]
    assert rejected.startswith(f"line 3: {message}")
    assert ";" not in rejected  # the refused value raises no other problem (no "is empty")
    assert "Error: 1 invalid row(s); nothing was written" in result.output
    assert "Traceback" not in result.output
    assert count(session, Patron) == 0


def test_skip_invalid_writes_the_clean_rows_and_never_stores_a_control_character(
        runner, session, tmp_path):
    result = run(runner, write(tmp_path, HEADER, ANA, '2001,"Eve\r\nBcc: x@example.org",,,,,,,,,,,',
                               "2002,Jose\u0301,,,,,,,,,,,"), "--skip-invalid")
    assert result.exit_code == 0, result.output
    assert "line 3: first_name contains a character that is not allowed: U+000D" in result.output
    assert "created 2, updated 0, unchanged 0, rejected 1" in result.output
    assert sorted(session.scalars(select(Patron.card_number))) == ["1001", "2002"]
    assert patron(session, "2002").first_name == "Jos\u00e9"  # stored in NFC


def test_every_problem_of_every_row_is_reported_at_once(runner, session, tmp_path):
    result = run(runner, write(tmp_path, HEADER, ANA,
                               "2001,Two,Problems,bad-email,1990-02-30,,,,,,,,",
                               "1001,Dup,,,,,,,,,,,",
                               "2002,Kid,,,,,,,,,2002,,zzz"))
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("line ")]
    assert lines == [
        "line 3: email: not a valid email address: An email address must have an @-sign; "
        "birth_date is not a date written YYYY-MM-DD",
        "line 4: card_number already appears on line 2",
        "line 5: status 'zzz' is not one of: active, inactive; "
        "guardian_card_number is the patron's own card",
    ]
    assert count(session, Patron) == 0


def test_skip_invalid_writes_the_good_rows_and_lists_the_bad(runner, session, tmp_path):
    path = write(tmp_path, HEADER, ANA, "2001,Bad,,,,xx,,,,,,,", SAM)
    result = run(runner, path, "--skip-invalid")
    assert result.exit_code == 0
    assert "line 3: preferred_language 'xx' is not one of: en, es" in result.output
    assert "created 2, updated 0, unchanged 0, rejected 1" in result.output
    assert sorted(session.scalars(select(Patron.card_number))) == ["1001", "1002"]


def test_an_absent_column_leaves_the_field_alone(runner, session, make_patron, tmp_path):
    make_patron(card="1001", email="ana@example.org", first_name="Ana", street="1 Main St",
                birth_date=date(1980, 1, 2))
    result = run(runner, write(tmp_path, "card_number,last_name", "1001,Reyes Luna"))
    assert "updated 1" in result.output
    ana = patron(session, "1001")
    assert (ana.first_name, ana.last_name, ana.email, ana.street, ana.birth_date) == (
        "Ana", "Reyes Luna", "ana@example.org", "1 Main St", date(1980, 1, 2))


def test_an_empty_column_clears_the_field(runner, session, make_patron, tmp_path):
    make_patron(card="1001", email="ana@example.org", street="1 Main St")
    result = run(runner, write(tmp_path, "card_number,email,street,birth_date", "1001,,,"))
    assert result.exit_code == 0
    ana = patron(session, "1001")
    assert (ana.email, ana.address_key, ana.street, ana.birth_date) == (None, None, "", None)


def test_a_changed_email_moves_the_patron_to_the_new_address(runner, session, ctx, make_patron,
                                                              tmp_path):
    ana = make_patron(card="1001", email="old@example.org")
    record_decision(session, ctx, DecisionRequest(
        purpose="email_marketing", decision=Decision.OPT_OUT, source=Source.UNSUBSCRIBE_LINK,
        actor=Actor.PATRON, occurred_at=NOW, patron=ana), now=NOW)
    session.commit()

    result = run(runner, write(tmp_path, "card_number,email", "1001,New@Example.org"))
    assert "updated 1" in result.output
    ana = patron(session, "1001")
    assert (ana.email, ana.address_key) == ("new@example.org", ctx.address_key("new@example.org"))
    # The old address keeps its opt-out; the new address has no decision of its own yet.
    old_key = ctx.address_key("old@example.org")
    assert session.scalars(select(AddressDecision.address_key)).all() == [old_key]
    standing = load_standings(session, [ana])[ana.id]
    assert standing.verdict(ctx.catalog.get("email_marketing"), None, NOW.date()).allowed


def test_reimporting_never_resubscribes_an_opted_out_patron(runner, session, ctx, tmp_path):
    path = write(tmp_path, HEADER, ANA)
    assert run(runner, path).exit_code == 0
    ana = patron(session, "1001")
    record_decision(session, ctx, DecisionRequest(
        purpose="email_marketing", decision=Decision.OPT_OUT, source=Source.UNSUBSCRIBE_LINK,
        actor=Actor.PATRON, occurred_at=NOW, patron=ana), now=NOW)
    session.commit()
    events = count(session, ConsentEvent)

    assert run(runner, path).exit_code == 0
    assert run(runner, path, "--skip-invalid").exit_code == 0
    ana = patron(session, "1001")
    standing = load_standings(session, [ana])[ana.id]
    verdict = standing.verdict(ctx.catalog.get("email_marketing"), None, NOW.date())
    assert verdict.reason is Reason.OPTED_OUT
    assert count(session, ConsentEvent) == events


def test_guardians_link_by_card_later_in_the_file_in_the_database_and_by_email(
        runner, session, make_patron, tmp_path):
    make_patron(card="9000", email="dad@example.org")
    result = run(runner, write(
        tmp_path, HEADER,
        "3001,Milo,Okafor,,2018-04-05,,,,,,1002,,",  # guardian on a later line
        "3002,Lena,Park,,2011-06-07,,,,,,9000,Grandma@Example.org,",  # guardian in the database
        SAM))
    assert result.exit_code == 0, result.output
    links = {(child, guardian, email) for child, guardian, email in session.execute(
        select(Patron.card_number, GuardianLink.guardian_id, GuardianLink.guardian_email)
        .join(GuardianLink, GuardianLink.child_id == Patron.id))}
    sam, dad = patron(session, "1002"), patron(session, "9000")
    assert links == {("3001", sam.id, None), ("3002", dad.id, None),
                     ("3002", None, "grandma@example.org")}


def test_an_import_adds_links_but_never_removes_them(runner, session, tmp_path):
    run(runner, write(tmp_path, HEADER, SAM, "3001,Milo,Okafor,,2018-04-05,,,,,,1002,,"))
    result = run(runner, write(tmp_path, HEADER, SAM,
                               "3001,Milo,Okafor,,2018-04-05,,,,,,,mum@example.org,"))
    assert "updated 1, unchanged 1" in result.output  # Milo gained a link
    assert count(session, GuardianLink) == 2
    assert "unchanged 2" in run(runner, write(tmp_path, "card_number,first_name", "3001,Milo",
                                              "1002,Sam")).output
    assert count(session, GuardianLink) == 2


def test_skipping_a_bad_guardian_row_rejects_the_child_that_names_it(runner, session, tmp_path):
    result = run(runner, write(
        tmp_path, HEADER,
        "3001,Milo,Okafor,,2018-04-05,,,,,,1002,,",
        "1002,Sam,Okafor,not-an-email,,,,,,,,,",
        ANA), "--skip-invalid")
    assert result.exit_code == 0
    assert "line 2: guardian_card_number is the card of line 3, which is rejected" in result.output
    assert "line 3: email: not a valid email address" in result.output
    assert "created 1, updated 0, unchanged 0, rejected 2" in result.output
    assert list(session.scalars(select(Patron.card_number))) == ["1001"]


def test_a_guardian_in_the_database_is_linked_even_when_its_row_is_rejected(
        runner, session, make_patron, tmp_path):
    sam = make_patron(card="1002", email="sam@example.org")
    result = run(runner, write(tmp_path, HEADER, "1002,Sam,,bad,,,,,,,,,",
                               "3001,Milo,Okafor,,2018-04-05,,,,,,1002,,"), "--skip-invalid")
    assert "created 1, updated 0, unchanged 0, rejected 1" in result.output
    assert session.scalars(select(GuardianLink.guardian_id)).all() == [sam.id]
    assert patron(session, "1002").email == "sam@example.org"


def test_a_file_with_a_byte_order_mark_imports(runner, session, tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffcard_number,first_name\r\n1001,José\r\n".encode())
    result = run(runner, path)
    assert result.exit_code == 0
    assert patron(session, "1001").first_name == "José"


def test_a_file_neither_utf8_nor_windows_1252_is_refused_naming_the_line(runner, session,
                                                                          tmp_path):
    path = tmp_path / "odd.csv"
    # 0x81 is no UTF-8 sequence's first byte and no Windows-1252 character
    path.write_bytes(b"card_number,first_name\n1001,Ana\n1002,Jos\xe9\x81\n")
    result = run(runner, path)
    assert result.exit_code == 1
    assert "Error: odd.csv: line 3 is neither UTF-8 nor Windows-1252 text (byte 0x81" in (
        result.output)
    assert "Traceback" not in result.output
    assert count(session, Patron) == 0


def test_a_header_without_card_number_is_refused_showing_the_header_found(runner, session,
                                                                          tmp_path):
    result = run(runner, write(tmp_path, "first_name,email", "Ana,ana@example.org"))
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: patrons.csv: line 1: missing required column(s): card_number; "
        "the header found is 'first_name,email'")


def test_a_misspelt_card_number_column_is_named_with_the_column_it_looks_like(runner, tmp_path):
    path = write(tmp_path, "CardNumber,first_name", "1001,Ana")
    result = run(runner, path, "--format", "generic")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: patrons.csv: line 1: missing required column(s): card_number "
        "('cardnumber': did you mean 'card_number'?); the header found is 'CardNumber,first_name'")
    # Koha and Evergreen call it `cardnumber`: by default the file could be either, and is refused
    result = run(runner, path)
    assert result.exit_code == 1
    assert "(it looks like both koha and evergreen); pass --format" in result.output


@pytest.mark.parametrize(("delimiter", "held"), [(";", "semicolons"), ("\t", "tabs")])
def test_a_file_with_semicolons_or_tabs_imports_as_with_commas_and_says_so(runner, session,
                                                                           tmp_path, delimiter,
                                                                           held):
    header = delimiter.join(("card_number", "first_name", "email"))
    result = run(runner, write(tmp_path, header, delimiter.join(("1001", "Ana", "a@example.org"))))
    assert result.exit_code == 0, result.output
    assert f"note: columns are separated by {held}" in result.output
    ana = patron(session, "1001")
    assert (ana.first_name, ana.email) == ("Ana", "a@example.org")


def test_a_header_that_mixes_delimiters_is_refused_naming_the_odd_column(runner, session,
                                                                         tmp_path):
    header = "card_number;first_name,email;birth_date"
    result = run(runner, write(tmp_path, header, "1001;Ana,a@example.org;1980-01-01"))
    assert result.exit_code == 1
    assert "'first_name,email': did you mean 'first_name'?" in result.output
    assert count(session, Patron) == 0


TYPO_HEADER = "card_number,first,last,email_address,birthdate"


def test_misspelt_columns_refuse_the_file_naming_each_and_the_column_it_looks_like(
        runner, session, tmp_path):
    # a child whose birth date column is misspelt would be imported as an adult
    result = run(runner, write(tmp_path, TYPO_HEADER, "1001,Kim,Lee,kim@example.org,2018-04-05"))
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: patrons.csv: line 1: unknown column(s) that look like misspelt known ones: "
        "'first': did you mean 'first_name'?; 'last': did you mean 'last_name'?; "
        "'email_address': did you mean 'email'?; 'birthdate': did you mean 'birth_date'?; "
        "correct the header, or pass --allow-partial to import without them; "
        f"the header found is {TYPO_HEADER!r}")
    assert count(session, Patron) == 0


def test_allow_partial_imports_without_the_misspelt_columns_and_lists_them(runner, session,
                                                                           tmp_path):
    result = run(runner, write(tmp_path, TYPO_HEADER, "1001,Kim,Lee,kim@example.org,2018-04-05"),
                 "--allow-partial")
    assert result.exit_code == 0, result.output
    assert ("note: ignored, as --allow-partial allows, column(s) that look misspelt: 'first': "
            "did you mean 'first_name'?; 'last': did you mean 'last_name'?; 'email_address': did "
            "you mean 'email'?; 'birthdate': did you mean 'birth_date'?") in result.output
    assert "created 1, updated 0, unchanged 0, rejected 0" in result.output
    kim = patron(session, "1001")
    assert (kim.first_name, kim.email, kim.birth_date) == ("", None, None)


def test_a_column_like_one_the_header_has_already_is_only_ignored(runner, session, tmp_path):
    # `middle_name` looks like `last_name`, but the header has `last_name`: nothing is lost
    result = run(runner, write(tmp_path, "card_number,first_name,last_name,middle_name,phone_number",
                               "1001,Ana,Reyes,Luz,555-0100"))
    assert result.exit_code == 0, result.output
    assert ("note: ignored column(s) this import does not use: middle_name, phone_number"
            in result.output)
    assert patron(session, "1001").last_name == "Reyes"


def test_a_header_whose_only_known_column_is_card_number_is_refused_unless_allow_partial(
        runner, session, tmp_path):
    path = write(tmp_path, "card_number,barcode_type", "1001,x")
    result = run(runner, path)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: patrons.csv: line 1: card_number is the only column this import knows, so every "
        "patron would be imported without name, email or birth date (and count as an adult); "
        "name the columns as documented, or pass --allow-partial; "
        "the header found is 'card_number,barcode_type'")
    assert count(session, Patron) == 0

    result = run(runner, path, "--allow-partial")
    assert result.exit_code == 0, result.output
    assert "note: ignored column(s) this import does not use: barcode_type" in result.output
    assert count(session, Patron) == 1


def test_an_empty_file_is_refused(runner, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    result = run(runner, path)
    assert result.exit_code == 1
    assert "Error: empty.csv: the file is empty; its first line must be the header" in result.output


def test_an_unclosed_quote_is_refused_naming_the_line_it_opens(session, ctx, tmp_path):
    path = write(tmp_path, "card_number,first_name", "1001,Ana", '1002,"Sam', "1003,Grace")
    with pytest.raises(ImportFileError, match="line 3 is not valid CSV"):
        import_patrons(session, ctx, path, now=NOW, skip_invalid=True)
    assert count(session, Patron) == 0


def test_extra_columns_are_ignored_and_blank_lines_skipped(session, ctx, tmp_path):
    path = write(tmp_path, "Card_Number ,barcode_type,first_name", "1001,x,Ana", "", "1002,y,Sam")
    report = import_patrons(session, ctx, path, now=NOW, skip_invalid=False)
    assert report.summary() == "created 2, updated 0, unchanged 0, rejected 0"
    assert report.notes == [
        "format generic (this service's own patron CSV), as --format says; columns used: "
        "card_number, first_name",
        "ignored column(s) this import does not use: barcode_type"]


def test_line_numbers_count_physical_lines_across_quoted_newlines(session, ctx, tmp_path):
    path = write(tmp_path, "card_number,street,status", '1001,"1 Main St\nApt 2",', "1002,,nope")
    report = import_patrons(session, ctx, path, now=NOW, skip_invalid=True)
    assert [(p.line, p.message) for p in report.problems] == [
        (4, "status 'nope' is not one of: active, inactive")]
    assert patron(session, "1001").street == "1 Main St\nApt 2"


def test_progress_is_reported_once_per_data_row(session, ctx, tmp_path):
    ticks = []
    for skip in (False, True):
        ticks.clear()
        import_patrons(session, ctx, write(tmp_path, HEADER, ANA, ",bad,,,,,,,,,,,", SAM),
                       now=NOW, skip_invalid=skip, on_row=lambda: ticks.append(1))
        assert len(ticks) == 3
