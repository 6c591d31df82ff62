"""`patrons import --format`: each ILS's export as the library has it, told apart from the others,
with its guardians and its opt-ins (through a consent map); and the files Excel writes."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import shutil
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.models import (
    AddressDecision,
    ConsentEvent,
    GuardianLink,
    GuardianRequest,
    Patron,
    PatronDecision,
    Topic,
)
from consent_service.services.decisions import DecisionRequest, record_decision
from tests.conftest import NOW

SAMPLES = Path(__file__).parents[1] / "samples" / "ils"
MAPS = Path(__file__).parents[2] / "docs" / "consent-maps"


@pytest.fixture
def news(session):
    session.add(Topic(key="news", name="Library news", created_at=NOW))
    session.commit()


def run(runner, path, *options):
    return runner.invoke(args=["patrons", "import", str(path), *options])


def patron(session, card):
    session.expire_all()
    return session.scalar(select(Patron).where(Patron.card_number == card))


def sample(tmp_path, name):
    """A copy of a sample file: an import may write its problems file beside it."""
    return Path(shutil.copy(SAMPLES / name, tmp_path / name))


def email_decision(session, ctx, email, topic="news"):
    session.expire_all()
    row = session.get(AddressDecision, (ctx.address_key(email), "email_marketing", topic))
    return row.decision if row else None


@pytest.mark.parametrize(("name", "chosen"), [
    ("koha.csv", "koha (Koha borrowers)"),
    ("koha-legacy-guarantor.csv", "koha (Koha borrowers)"),
    ("evergreen.csv", "evergreen (Evergreen patron loader)"),
    ("sierra.csv", "sierra (Sierra Create Lists export)"),
    ("polaris.csv", "polaris (Polaris patron export)"),
])
def test_auto_picks_the_format_that_wrote_the_file_and_says_so(runner, tmp_path, name, chosen):
    result = run(runner, sample(tmp_path, name), "--skip-invalid")
    assert f"note: format {chosen}, detected from its header; columns used: " in result.output


def test_a_header_that_fits_two_systems_equally_is_refused_asking_for_format(runner, tmp_path):
    path = tmp_path / "ambiguous.csv"
    path.write_text("cardnumber,email\n1,a@example.org\n", encoding="utf-8")
    result = run(runner, path)
    assert result.exit_code == 1
    assert "cannot tell which system wrote this file (it looks like both" in result.output
    assert "pass --format" in result.output


def test_koha_borrowers_with_guarantors_in_the_file_and_shared_household_email(
        runner, session, ctx, tmp_path):
    result = run(runner, sample(tmp_path, "koha.csv"))
    assert result.exit_code == 0, result.output
    assert "created 4, updated 0, unchanged 0, rejected 0" in result.output
    ana, lucia, mateo, sam = (patron(session, card) for card in
                              ("21000001", "21000002", "21000003", "21000004"))
    assert (ana.first_name, ana.last_name, ana.email, ana.birth_date, ana.ils_id) == (
        "Ana", "Reyes", "ana.reyes@example.org", date(1982, 4, 11), "101")
    assert (ana.street, ana.city, ana.state, ana.postal_code) == (
        "12 Main St\nApt 2", "Denver", "CO", "80202")
    assert (ana.preferred_language, mateo.preferred_language) == ("es", "en")  # es-ES, default
    # the children share their mother's address, and guarantor_id names her borrowernumber
    assert lucia.address_key == mateo.address_key == ana.address_key
    linked = {(link.child_id, link.guardian_id) for link in session.scalars(select(GuardianLink))}
    assert linked == {(lucia.id, ana.id), (mateo.id, ana.id)}
    # Lucia is 8: her mother is asked for consent
    assert session.scalar(select(GuardianRequest.child_id)) == lucia.id
    assert sam.email == "sam.okafor@example.org"


def test_koha_legacy_guarantorid_is_resolved_against_patrons_imported_before(runner, session,
                                                                             tmp_path):
    assert run(runner, sample(tmp_path, "koha.csv")).exit_code == 0
    result = run(runner, sample(tmp_path, "koha-legacy-guarantor.csv"))
    assert result.exit_code == 0, result.output
    sofia, ana = patron(session, "21000005"), patron(session, "21000001")
    assert session.scalar(select(GuardianLink.guardian_id).where(
        GuardianLink.child_id == sofia.id)) == ana.id


def test_a_guarantor_nobody_knows_rejects_the_row(runner, session, tmp_path):
    path = sample(tmp_path, "koha-legacy-guarantor.csv")
    result = run(runner, path)
    assert result.exit_code == 1
    assert ("line 2: the guarantor's borrowernumber 101 is no patron in this file or imported "
            "before") in result.output
    assert patron(session, "21000005") is None


def test_evergreen_juveniles_guardian_emails_preferred_names_and_inactive_patrons(
        runner, session, ctx, tmp_path):
    result = run(runner, sample(tmp_path, "evergreen.csv"), "--skip-invalid")
    assert result.exit_code == 0, result.output
    assert "created 4, updated 0, unchanged 0, rejected 1" in result.output
    assert ("line 5: juvenile is set but dob is empty: without a birth date the patron would "
            "count as an adult") in result.output
    assert ("note: line 5: guardian holds a name but guardian_email is empty: no guardian "
            "linked") in result.output
    kim, bao, walker = patron(session, "24000001"), patron(session, "24000002"), patron(
        session, "24000005")
    assert (kim.first_name, kim.last_name) == ("Kim", "Nguyen")  # pref_first_given_name
    assert (kim.street, kim.city, kim.postal_code) == ("88 Oak Ave", "Athens", "30601")
    assert bao.birth_date == date(2016, 2, 14)
    assert session.scalar(select(GuardianLink.guardian_email).where(
        GuardianLink.child_id == bao.id)) == "kim.nguyen@example.org"
    assert walker.status == "inactive"
    assert patron(session, "24000004") is None  # the juvenile without a birth date


def test_sierra_last_first_names_us_dates_address_lines_and_several_addresses(runner, session,
                                                                              tmp_path):
    result = run(runner, sample(tmp_path, "sierra.csv"))
    assert result.exit_code == 0, result.output
    assert ("note: line 2: EMAIL ADDR holds several addresses: the first is used"
            in result.output)
    john, emma, rosa = (patron(session, card) for card in ("23000001", "23000002", "23000003"))
    assert (john.first_name, john.last_name, john.email, john.birth_date) == (
        "JOHN Q", "SMITH", "john.smith@example.org", date(1975, 3, 15))
    assert (john.street, john.city, john.state, john.postal_code, john.ils_id) == (
        "100 MAIN ST", "CASTLE ROCK", "CO", "80104", "p1000001a")
    assert emma.birth_date == date(2016, 7, 4)
    assert (rosa.street, rosa.city, rosa.preferred_language) == ("7 ELM ST\nAPT 4", "PARKER", "es")


def test_polaris_names_us_and_iso_dates_and_language_ids(runner, session, tmp_path):
    result = run(runner, sample(tmp_path, "polaris.csv"))
    assert result.exit_code == 0, result.output
    dana, jordan, luis = (patron(session, card) for card in ("29000001", "29000002", "29000003"))
    assert (dana.first_name, dana.last_name, dana.birth_date, dana.ils_id) == (
        "Dana", "Lee", date(1988, 9, 21), "5001")
    assert jordan.birth_date == date(2015, 1, 5)
    assert (luis.birth_date, luis.preferred_language, luis.street) == (
        date(1970, 6, 30), "es", "12 River Rd\nUnit B")


def test_a_us_date_in_a_system_that_writes_iso_dates_is_rejected(runner, session, tmp_path):
    path = tmp_path / "koha.csv"
    path.write_text("cardnumber,surname,firstname,dateofbirth\n1,Reyes,Ana,04/11/1982\n",
                    encoding="utf-8")
    result = run(runner, path)
    assert result.exit_code == 1
    assert "birth date '04/11/1982' is not a date written YYYY-MM-DD" in result.output


@pytest.mark.parametrize(("name", "consent_map", "opted_in", "opted_out"), [
    ("koha.csv", "koha.toml", ["ana.reyes@example.org"], ["sam.okafor@example.org"]),
    ("evergreen.csv", "evergreen.toml", ["kim.nguyen@example.org"], ["pat.walker@example.org"]),
    ("sierra.csv", "sierra.toml", ["rosa.garcia@example.org"], ["john.smith@example.org"]),
    ("polaris.csv", "polaris.toml", ["dana.lee@example.org"], ["luis.moreno@example.org"]),
])
def test_each_systems_opt_ins_become_decisions_through_its_example_consent_map(
        runner, session, ctx, news, tmp_path, name, consent_map, opted_in, opted_out):
    result = run(runner, sample(tmp_path, name), "--consent-map", str(MAPS / consent_map),
                 "--skip-invalid")
    assert result.exit_code == 0, result.output
    topic = "news" if consent_map == "koha.toml" else ""
    for email in opted_in:
        assert email_decision(session, ctx, email, topic) == "opt_in", email
    for email in opted_out:
        assert email_decision(session, ctx, email, topic) == "opt_out", email
    events = session.scalars(select(ConsentEvent)).all()
    assert {(e.source, e.actor) for e in events} == {("import", "patron")}
    assert all(e.evidence["source_detail"].startswith("ils:") for e in events)
    assert f"decisions recorded {len(events)}" in result.output
    # the same file again records nothing
    again = run(runner, sample(tmp_path, name), "--consent-map", str(MAPS / consent_map),
                "--skip-invalid")
    assert "decisions recorded 0" in again.output
    assert session.scalar(select(func.count()).select_from(ConsentEvent)) == len(events)


def test_a_shared_household_address_takes_the_first_opt_in_and_a_later_opt_out(
        runner, session, ctx, news, tmp_path):
    """Sierra: John (s) and Emma (-) share an address. An email decision is the address's: John's
    opt-in is recorded first; Emma's opt-out is recorded after it (a no from anyone at the address
    is honoured), and the file's order decides nothing else on a re-run."""
    result = run(runner, sample(tmp_path, "sierra.csv"), "--consent-map",
                 str(MAPS / "sierra.toml"))
    assert result.exit_code == 0, result.output
    assert email_decision(session, ctx, "john.smith@example.org", "") == "opt_out"
    assert "decisions recorded 3" in result.output  # John, Emma, Rosa


def test_the_ils_never_overturns_what_a_patron_told_us_since(runner, session, ctx, news, tmp_path):
    consent_map = str(MAPS / "koha.toml")
    assert run(runner, sample(tmp_path, "koha.csv"), "--consent-map", consent_map,
               "--consents-as-of", "2026-06-01").exit_code == 0
    ana = patron(session, "21000001")
    assert email_decision(session, ctx, "ana.reyes@example.org") == "opt_in"
    record_decision(session, ctx, DecisionRequest(
        purpose="email_marketing", topic="news", decision=Decision.OPT_OUT,
        source=Source.PREFERENCE_CENTER, actor=Actor.PATRON, occurred_at=NOW + timedelta(days=1),
        patron=ana), now=NOW + timedelta(days=1))
    session.commit()
    # the next day's export still says NEWSLETTER:1: unchanged in the ILS, so nothing is recorded
    result = run(runner, sample(tmp_path, "koha.csv"), "--consent-map", consent_map,
                 "--consents-as-of", "2026-06-03")
    assert result.exit_code == 0, result.output
    assert "decisions recorded 0" in result.output
    assert email_decision(session, ctx, "ana.reyes@example.org") == "opt_out"


def test_a_first_ils_opt_in_never_overturns_a_decision_already_in_force(runner, session, ctx, news,
                                                                        tmp_path, make_patron):
    sam = make_patron(card="21000004", email="sam.okafor@example.org")
    record_decision(session, ctx, DecisionRequest(
        purpose="email_marketing", decision=Decision.OPT_OUT, source=Source.UNSUBSCRIBE_LINK,
        actor=Actor.PATRON, occurred_at=NOW - timedelta(days=30), patron=sam), now=NOW)
    session.commit()
    path = tmp_path / "koha.csv"
    path.write_text("cardnumber,surname,firstname,email,patron_attributes\n"
                    "21000004,Okafor,Sam,sam.okafor@example.org,NEWSLETTER:1\n", encoding="utf-8")
    result = run(runner, path, "--consent-map", str(MAPS / "koha.toml"))
    assert "decisions recorded 0" in result.output
    assert email_decision(session, ctx, "sam.okafor@example.org") is None
    assert session.get(AddressDecision, (sam.address_key, "email_marketing", "")).decision == (
        "opt_out")


def test_a_postal_purpose_map_records_on_the_patron(runner, session, tmp_path):
    consent_map = tmp_path / "postal.toml"
    consent_map.write_text('[[consent]]\nfield = "User1"\npurpose = "postal_marketing"\n'
                           'opt_in = ["Y"]\nopt_out = ["N"]\n', encoding="utf-8")
    result = run(runner, sample(tmp_path, "polaris.csv"), "--consent-map", str(consent_map))
    assert result.exit_code == 0, result.output
    luis = patron(session, "29000003")
    assert session.get(PatronDecision, (luis.id, "postal_marketing", "")).decision == "opt_out"


@pytest.mark.parametrize(("text", "message"), [
    ("not toml [", "not a TOML consent map"),
    ('[[consent]]\nfield = "X"\npurpose = "email_marketing"\n', "give the values that mean yes"),
    ('[[consent]]\nfield = "X"\npurpose = "email_marketing"\nopt_in = ["1"]\nopt_out = ["1"]\n',
     "1 cannot mean both yes and no"),
    ('[[consent]]\nfield = "X"\npurpose = "emial"\nopt_in = ["1"]\n', "emial"),
    ('[[consent]]\nfield = "X"\npurpose = "email_marketing"\ntopic = "nope"\nopt_in = ["1"]\n',
     "unknown topic 'nope'"),
    ('[[consent]]\nfeild = "X"\npurpose = "email_marketing"\nopt_in = ["1"]\n',
     "unknown key(s) feild"),
])
def test_a_bad_consent_map_is_refused_in_one_line_before_anything_is_written(
        runner, session, news, tmp_path, text, message):
    consent_map = tmp_path / "map.toml"
    consent_map.write_text(text, encoding="utf-8")
    result = run(runner, sample(tmp_path, "koha.csv"), "--consent-map", str(consent_map))
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert patron(session, "21000001") is None


# --- the files Excel writes ---------------------------------------------------------------------

HEADER = "card_number,first_name,last_name,email,birth_date,street,city"
ROWS = ['2001,José,Muñoz,jose@example.org,1990-05-06,"1 Calle Mayor\nPiso 2",Denver',
        "2002,Zoë,O’Neil,zoe@example.org,1988-01-01,2 Elm St,Denver"]


def _as_excel(text: str, delimiter: str, encoding: str, bom: bool, newline: str) -> bytes:
    lines = text.replace(",", delimiter) if delimiter != "," else text
    data = lines.replace("\n", "\0").replace("\0", newline)  # every line end, quoted ones too
    return (b"\xef\xbb\xbf" if bom else b"") + data.encode(encoding)


@pytest.mark.parametrize(("delimiter", "encoding", "bom", "newline"), [
    (",", "utf-8", True, "\r\n"),
    (";", "utf-8", True, "\r\n"),
    ("\t", "utf-8", False, "\n"),
    (";", "windows-1252", False, "\r\n"),
    (",", "windows-1252", False, "\r"),
])
def test_what_excel_writes_imports_the_same_as_clean_utf8(runner, session, tmp_path, delimiter,
                                                          encoding, bom, newline):
    clean = "\n".join([HEADER, *ROWS]) + "\n"
    path = tmp_path / "excel.csv"
    path.write_bytes(_as_excel(clean, delimiter, encoding, bom, newline))
    result = run(runner, path)
    assert result.exit_code == 0, result.output
    jose, zoe = patron(session, "2001"), patron(session, "2002")
    assert (jose.first_name, jose.last_name, jose.street, jose.birth_date) == (
        "José", "Muñoz", "1 Calle Mayor\nPiso 2", date(1990, 5, 6))
    assert (zoe.first_name, zoe.last_name) == ("Zoë", "O’Neil")
    if encoding == "windows-1252":
        assert "note: read as windows-1252 text" in result.output


def test_encoding_option_reads_the_file_as_told_and_names_a_line_that_is_not(runner, session,
                                                                            tmp_path):
    path = tmp_path / "cp1252.csv"
    path.write_bytes("card_number,first_name\n2001,José\n".encode("windows-1252"))
    result = run(runner, path, "--encoding", "utf-8")
    assert result.exit_code == 1
    assert "line 2 is not utf-8 text (byte 0xe9" in result.output
    assert run(runner, path, "--encoding", "windows-1252").exit_code == 0
    assert patron(session, "2001").first_name == "José"


def test_a_utf16_file_is_refused_saying_how_to_save_it(runner, session, tmp_path):
    path = tmp_path / "unicode.csv"
    path.write_bytes("card_number,first_name\n2001,Ana\n".encode("utf-16"))
    result = run(runner, path)
    assert result.exit_code == 1
    assert 'not CSV text (UTF-16, or a spreadsheet\'s own format?); save it as "CSV UTF-8"' in (
        result.output)


def test_many_invalid_lines_are_all_listed_in_a_file_beside_the_input(runner, session, tmp_path):
    path = tmp_path / "big.csv"
    bad = [f"{3000 + n},Ana,Reyes,not-an-email,1990-01-01,,Denver" for n in range(25)]
    path.write_text("\n".join([HEADER, *bad, ROWS[1]]) + "\n", encoding="utf-8")
    result = run(runner, path, "--skip-invalid")
    assert result.exit_code == 0, result.output
    shown = [line for line in result.output.splitlines() if line.startswith("line ")]
    assert len(shown) == 20
    listed = (tmp_path / "big.csv.problems.csv").read_text(encoding="utf-8").splitlines()
    assert listed[0] == "line,problem"
    assert [row.split(",")[0] for row in listed[1:]] == [str(n) for n in range(2, 27)]
    assert f"all 25 invalid lines are listed in {tmp_path / 'big.csv.problems.csv'}" in (
        result.output)
    assert "created 1, updated 0, unchanged 0, rejected 25" in result.output


def test_no_progress_bar_when_not_on_a_terminal(runner, tmp_path):
    path = tmp_path / "one.csv"
    path.write_text(HEADER + "\n" + ROWS[1] + "\n", encoding="utf-8")
    result = run(runner, path)
    assert result.exit_code == 0, result.output
    assert "Importing patrons" not in result.output
    assert result.output.splitlines()[-1] == "created 1, updated 0, unchanged 0, rejected 0"


def test_a_terminal_gets_a_progress_bar_with_a_rate_and_the_summary_after_it(tmp_path):
    """Run as an operator does, standard error on a real (pseudo-)terminal."""
    flask = Path(sys.executable).with_name("flask")
    env = {**os.environ, "CONSENT_DATABASE_URL": f"sqlite:///{tmp_path / 'tty.sqlite3'}",
           "CONSENT_MAIL_FILE_DIR": str(tmp_path / "mail"), "COLUMNS": "120"}
    env.pop("CONSENT_ENV", None)
    subprocess.run([str(flask), "--app", "consent_service", "db", "upgrade"], cwd=tmp_path,
                   env=env, capture_output=True, check=True)
    controller, terminal = pty.openpty()
    try:
        ran = subprocess.run(
            [str(flask), "--app", "consent_service", "patrons", "import",
             str(sample(tmp_path, "polaris.csv"))],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=terminal, text=True,
            timeout=120)
        os.close(terminal)
        shown = b""
        with contextlib.suppress(OSError):  # EIO once the terminal's other end is closed
            while chunk := os.read(controller, 4096):
                shown += chunk
    finally:
        os.close(controller)
    assert ran.returncode == 0
    screen = shown.decode(errors="replace")
    assert "Importing patrons" in screen
    assert re.search(r"3/3 .*rows, [\d,]+/s", screen), screen
    assert ran.stdout.strip().splitlines()[-1] == "created 3, updated 0, unchanged 0, rejected 0"


def test_when_the_problems_file_cannot_be_written_every_invalid_line_is_printed(runner, session,
                                                                              tmp_path):
    path = tmp_path / "big.csv"
    bad = [f"{3000 + n},Ana,Reyes,not-an-email,1990-01-01,,Denver" for n in range(25)]
    path.write_text("\n".join([HEADER, *bad]) + "\n", encoding="utf-8")
    (tmp_path / "big.csv.problems.csv").mkdir()  # in the way of the file
    result = run(runner, path, "--skip-invalid")
    assert result.exit_code == 0, result.output
    assert len([line for line in result.output.splitlines() if line.startswith("line ")]) == 25
    assert f"(could not write {tmp_path / 'big.csv.problems.csv'}: Is a directory)" in (
        result.output)
