"""`export contacts`: who is in the marketing list, who is left out and why, and the manifest."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.domain.purposes import UnknownPurposeError
from consent_service.domain.tokens import InvalidLinkError, LinkKind
from consent_service.models import (
    AddressSuppression,
    ExportManifest,
    Topic,
    UndeliverableAddress,
)
from consent_service.services import export as export_module
from consent_service.services.decisions import DecisionRequest, UnknownTopicError, record_decision
from consent_service.services.export import export_contacts
from tests.conftest import NOW

EMAIL = "email_marketing"
POSTAL = "postal_marketing"
EMAIL_HEADER = ["email", "first_name", "last_name", "preferred_language", "patron_id",
                "unsubscribe_url", "preferences_url"]
POSTAL_HEADER = ["patron_id", "first_name", "last_name", "email", "street", "city", "state",
                 "postal_code"]
EXCLUDED_HEADER = ["patron_id", "card_number", "first_name", "last_name", "reason"]
HOME = {"street": "1 Main St", "city": "Golden", "state": "CO", "postal_code": "80401"}


def decide(session, ctx, patron, decision, *, purpose=EMAIL, topic=None, actor=Actor.PATRON,
           at=NOW - timedelta(hours=1)):
    record_decision(session, ctx, DecisionRequest(
        purpose=purpose, topic=topic, decision=Decision(decision), source=Source.STAFF_DESK,
        actor=actor, occurred_at=at, patron=patron), now=NOW)
    session.commit()


def read_csv(path):
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def run_export(runner, tmp_path, *options):
    """Export through the CLI to files; returns (header, rows as dicts by patron_id, reasons)."""
    output, excluded = tmp_path / "contacts.csv", tmp_path / "excluded.csv"
    result = runner.invoke(args=["export", "contacts", *options, "--output", str(output),
                                 "--excluded", str(excluded)])
    assert result.exit_code == 0, result.output
    header, *rows = read_csv(output)
    excluded_header, *left_out = read_csv(excluded)
    assert excluded_header == EXCLUDED_HEADER
    by_id = {row[header.index("patron_id")]: dict(zip(header, row, strict=True)) for row in rows}
    assert len(by_id) == len(rows)
    return header, by_id, {row[0]: row[-1] for row in left_out}


@pytest.fixture
def events_topic(session):
    session.add(Topic(key="events", name="Events", created_at=NOW))
    session.commit()
    return "events"


def test_email_export_gives_one_row_per_address_for_the_first_eligible_patron(
        runner, tmp_path, make_patron):
    parent = make_patron(email="home@example.org", first_name="Ana", preferred_language="es")
    partner = make_patron(email="home@example.org", first_name="Ben")
    single = make_patron(email="solo@example.org", first_name="Cy")

    header, rows, left_out = run_export(runner, tmp_path, "--purpose", EMAIL)

    assert header == EMAIL_HEADER
    assert set(rows) == {parent.public_id, single.public_id}
    assert rows[parent.public_id] | {"unsubscribe_url": "", "preferences_url": ""} == {
        "email": "home@example.org", "first_name": "Ana", "last_name": "Example",
        "preferred_language": "es", "patron_id": parent.public_id,
        "unsubscribe_url": "", "preferences_url": ""}
    assert partner.public_id not in left_out  # covered by the address's row, not left out
    assert left_out == {}


def test_a_shared_address_is_one_row_even_across_chunk_boundaries(session, ctx, tmp_path,
                                                                   make_patron):
    family = [make_patron(email="big-family@example.org") for _ in range(5)]
    make_patron(email="another@example.org")
    output = tmp_path / "contacts.csv"

    manifest = export_contacts(session, ctx, purpose=EMAIL, topic=None, output=output,
                               excluded=None, created_by="test", now=NOW, chunk_size=2)

    emails = [row[0] for row in read_csv(output)[1:]]
    assert sorted(emails) == ["another@example.org", "big-family@example.org"]
    assert manifest.row_count == 2
    family_row = next(row for row in read_csv(output)[1:] if row[0] == "big-family@example.org")
    assert family_row[4] == family[0].public_id


def test_an_opted_out_address_leaves_out_every_patron_at_it(session, ctx, runner, tmp_path,
                                                            make_patron):
    parent = make_patron(email="home@example.org")
    partner = make_patron(email="home@example.org")
    decide(session, ctx, partner, "opt_out")

    _, rows, left_out = run_export(runner, tmp_path, "--purpose", EMAIL)

    assert rows == {}
    assert left_out == {parent.public_id: "opted_out", partner.public_id: "opted_out"}


def test_a_child_is_left_out_until_a_guardian_opts_in(session, ctx, runner, tmp_path, make_patron):
    child = make_patron(email="kid@example.org", birth_date=date(2018, 3, 1))

    _, rows, left_out = run_export(runner, tmp_path, "--purpose", EMAIL)
    assert rows == {} and left_out == {child.public_id: "guardian_consent_required"}

    decide(session, ctx, child, "opt_in", actor=Actor.GUARDIAN)
    _, rows, left_out = run_export(runner, tmp_path, "--purpose", EMAIL)
    assert set(rows) == {child.public_id} and left_out == {}


def test_a_child_first_at_a_shared_address_leaves_the_row_to_the_eligible_parent(
        runner, tmp_path, make_patron):
    child = make_patron(email="home@example.org", birth_date=date(2019, 9, 9), first_name="Kid")
    parent = make_patron(email="home@example.org", first_name="Parent")

    _, rows, left_out = run_export(runner, tmp_path, "--purpose", EMAIL)

    assert set(rows) == {parent.public_id}
    assert rows[parent.public_id]["first_name"] == "Parent"
    assert left_out == {child.public_id: "guardian_consent_required"}


def test_inactive_and_missing_email_are_left_out_with_their_reason(runner, tmp_path, make_patron):
    active = make_patron(email="reader@example.org")
    inactive = make_patron(email="gone@example.org", status="inactive")
    no_email = make_patron(email=None)
    inactive_no_email = make_patron(email=None, status="inactive")

    _, rows, left_out = run_export(runner, tmp_path, "--purpose", EMAIL)

    assert set(rows) == {active.public_id}
    assert left_out == {inactive.public_id: "inactive", no_email.public_id: "no_email",
                        inactive_no_email.public_id: "inactive"}


def test_postal_export_needs_a_complete_postal_address(runner, tmp_path, make_patron):
    mailable = make_patron(email=None, first_name="Dora", **HOME)
    no_street = make_patron(**(HOME | {"street": ""}))
    nothing = make_patron()

    header, rows, left_out = run_export(runner, tmp_path, "--purpose", POSTAL)

    assert header == POSTAL_HEADER
    assert rows == {mailable.public_id: {
        "patron_id": mailable.public_id, "first_name": "Dora", "last_name": "Example", "email": "",
        "street": "1 Main St", "city": "Golden", "state": "CO", "postal_code": "80401"}}
    assert left_out == {no_street.public_id: "no_postal_address",
                        nothing.public_id: "no_postal_address"}


def test_suppressed_and_undeliverable_addresses_are_left_out(session, ctx, runner, tmp_path,
                                                             make_patron):
    reported = make_patron(email="spam-report@example.org")
    bounced = make_patron(email="bounced@example.org")
    lifted = make_patron(email="came-back@example.org")
    session.add_all([
        AddressSuppression(address_key=reported.address_key, reason="spamreport",
                           suppressed_at=NOW - timedelta(days=3)),
        AddressSuppression(address_key=lifted.address_key, reason="spamreport",
                           suppressed_at=NOW - timedelta(days=3),
                           lifted_at=NOW - timedelta(days=1)),
        UndeliverableAddress(address_key=bounced.address_key, reason="bounce",
                             occurred_at=NOW - timedelta(days=2)),
    ])
    session.commit()

    _, rows, left_out = run_export(runner, tmp_path, "--purpose", EMAIL)

    assert set(rows) == {lifted.public_id}
    assert left_out == {reported.public_id: "address_suppressed",
                        bounced.public_id: "address_undeliverable"}


def test_topic_export_follows_topic_and_whole_purpose_decisions_by_time(
        session, ctx, runner, tmp_path, make_patron, events_topic):
    no_events = make_patron(email="no-events@example.org")
    back_for_events = make_patron(email="events-only@example.org")
    decide(session, ctx, no_events, "opt_out", topic=events_topic)
    decide(session, ctx, back_for_events, "opt_out", at=NOW - timedelta(days=2))
    decide(session, ctx, back_for_events, "opt_in", topic=events_topic, at=NOW - timedelta(days=1))

    _, rows, left_out = run_export(runner, tmp_path, "--purpose", EMAIL, "--topic", events_topic)
    assert set(rows) == {back_for_events.public_id}
    assert left_out == {no_events.public_id: "opted_out"}
    token = rows[back_for_events.public_id]["unsubscribe_url"].rsplit("/", 1)[1]
    assert ctx.signer.verify(LinkKind.UNSUBSCRIBE, token).topic == events_topic

    _, rows, left_out = run_export(runner, tmp_path, "--purpose", EMAIL)
    assert set(rows) == {no_events.public_id}
    assert left_out == {back_for_events.public_id: "opted_out"}


@pytest.mark.parametrize("options, message", [
    (["--purpose", "carrier_pigeon"], "Error: unknown purpose 'carrier_pigeon'"),
    (["--purpose", EMAIL, "--topic", "nope"], "Error: unknown topic 'nope'"),
    (["--purpose", POSTAL, "--topic", "events"], "Error: purpose 'postal_marketing' has no topics"),
])
def test_unknown_purpose_or_topic_is_one_line_and_writes_nothing(
        session, runner, tmp_path, make_patron, events_topic, options, message):
    make_patron()
    result = runner.invoke(args=["export", "contacts", *options,
                                 "--output", str(tmp_path / "contacts.csv"),
                                 "--excluded", str(tmp_path / "excluded.csv")])

    assert result.exit_code == 1
    assert result.output.startswith(message) and result.output.count("\n") == 1
    assert "Traceback" not in result.output
    assert [p.name for p in tmp_path.iterdir() if p.name != "mail"] == []
    assert session.scalar(select(func.count()).select_from(ExportManifest)) == 0


def test_manifest_counts_and_sha256_match_the_file(session, runner, tmp_path, make_patron):
    make_patron(email="a@example.org")
    make_patron(email="a@example.org")
    make_patron(email="b@example.org")
    make_patron(email=None)
    make_patron(email="c@example.org", status="inactive")
    make_patron(email="d@example.org", birth_date=date(2020, 1, 1))

    run_export(runner, tmp_path, "--purpose", EMAIL, "--by", "marketing@library.example")

    manifest = session.scalars(select(ExportManifest)).one()
    contents = (tmp_path / "contacts.csv").read_bytes()
    assert manifest.sha256 == hashlib.sha256(contents).hexdigest()
    assert manifest.row_count == contents.count(b"\n") - 1 == 2
    assert manifest.excluded_counts == {
        "guardian_consent_required": 1, "inactive": 1, "no_email": 1}
    assert (manifest.purpose, manifest.topic, manifest.file_name, manifest.created_by) == (
        EMAIL, None, "contacts.csv", "marketing@library.example")
    excluded_rows = read_csv(tmp_path / "excluded.csv")[1:]
    assert len(excluded_rows) == sum(manifest.excluded_counts.values())


def test_export_to_standard_output_hashes_the_bytes_written(session, runner, make_patron):
    patron = make_patron(email="reader@example.org", first_name="Zoë")

    result = runner.invoke(args=["export", "contacts", "--purpose", EMAIL])

    assert result.exit_code == 0, result.output
    manifest = session.scalars(select(ExportManifest)).one()
    assert hashlib.sha256(result.stdout_bytes).hexdigest() == manifest.sha256
    header, row = list(csv.reader(io.StringIO(result.stdout_bytes.decode("utf-8"))))
    assert header == EMAIL_HEADER and row[:2] == ["reader@example.org", "Zoë"]
    assert row[4] == patron.public_id
    assert f"exported 1 row(s) as generic; left out: none; sha256 {manifest.sha256}" in (
        result.stderr)
    assert manifest.file_name is None


def test_links_in_the_export_open_their_own_page_and_carry_no_personal_data(
        ctx, runner, tmp_path, make_patron):
    patron = make_patron(card="21009999", email="private.reader@example.org")

    _, rows, _ = run_export(runner, tmp_path, "--purpose", EMAIL)

    row = rows[patron.public_id]
    for kind, column in ((LinkKind.UNSUBSCRIBE, "unsubscribe_url"),
                         (LinkKind.PREFERENCES, "preferences_url")):
        url = urlsplit(row[column])
        assert (url.scheme, url.netloc) == ("https", "consent.example.org")
        _, path_kind, token = url.path.split("/")
        assert path_kind == kind.value
        claims = ctx.signer.verify(kind, token)
        assert claims.patron_id == patron.public_id and claims.topic is None
        payload = base64.urlsafe_b64decode(token.split(".")[0] + "==")
        assert json.loads(payload) == {"p": patron.public_id}  # no email, card number or name
    unsubscribe_token = row["unsubscribe_url"].rsplit("/", 1)[1]
    with pytest.raises(InvalidLinkError):
        ctx.signer.verify(LinkKind.PREFERENCES, unsubscribe_token)


def test_names_that_would_run_as_spreadsheet_formulas_are_written_as_text(
        runner, tmp_path, make_patron):
    risky = make_patron(first_name="=HYPERLINK(\"http://evil.example\")", last_name="@SUM(A1)",
                        email=None, **(HOME | {"street": "-1 Main St", "city": "+Golden"}))
    plain = make_patron(first_name="Ana-Maria", last_name="O'Neil", email=None, **HOME)

    _, rows, _ = run_export(runner, tmp_path, "--purpose", POSTAL)

    assert rows[risky.public_id]["first_name"] == "'=HYPERLINK(\"http://evil.example\")"
    assert rows[risky.public_id]["last_name"] == "'@SUM(A1)"
    assert (rows[risky.public_id]["street"], rows[risky.public_id]["city"]) == (
        "'-1 Main St", "'+Golden")
    assert (rows[plain.public_id]["first_name"], rows[plain.public_id]["last_name"]) == (
        "Ana-Maria", "O'Neil")


def test_the_excluded_file_names_each_left_out_patron_for_the_librarys_follow_up(
        runner, tmp_path, make_patron):
    kid = make_patron(card="K100", first_name="Kim", last_name="Lee", birth_date=date(2018, 3, 1),
                      email="kim@example.org")
    gone = make_patron(card="G200", first_name="Gus", last_name="Ortiz", status="inactive",
                       email="gus@example.org")
    ana = make_patron(card="A300", email="ana@example.org")

    header, rows, _ = run_export(runner, tmp_path, "--purpose", EMAIL)
    assert set(rows) == {ana.public_id}

    excluded_header, *left_out = read_csv(tmp_path / "excluded.csv")
    assert excluded_header == EXCLUDED_HEADER
    assert sorted(left_out, key=lambda row: row[1]) == [
        [gone.public_id, "G200", "Gus", "Ortiz", "inactive"],
        [kid.public_id, "K100", "Kim", "Lee", "guardian_consent_required"],
    ]
    # the contact file stays opaque: no card number in its header or anywhere in it
    assert "card_number" not in header
    assert "A300" not in (tmp_path / "contacts.csv").read_text(encoding="utf-8")


def test_every_cell_that_would_run_as_a_formula_is_text_in_both_files(
        runner, tmp_path, make_patron):
    # an address stored before validation refused it, and names the import checks let through
    risky = make_patron(card="=1+1", first_name="-2+3", last_name="\tTab", email=None)
    stored = make_patron(email="=cmd|'/Ccalc'!A0@example.org", first_name="+Plus")

    _, rows, _ = run_export(runner, tmp_path, "--purpose", EMAIL)

    assert rows[stored.public_id]["email"] == "'=cmd|'/Ccalc'!A0@example.org"
    assert rows[stored.public_id]["first_name"] == "'+Plus"
    excluded = read_csv(tmp_path / "excluded.csv")
    assert excluded[1] == [risky.public_id, "'=1+1", "'-2+3", "'\tTab", "no_email"]


def test_a_failure_midway_keeps_the_previous_file_and_leaves_no_partial_file(
        session, ctx, tmp_path, make_patron, monkeypatch):
    for n in range(5):
        make_patron(email=f"reader{n}@example.org")
    output = tmp_path / "contacts.csv"
    output.write_text("the previous export\n", encoding="utf-8")
    calls = []

    def failing_after_rows_were_written(*args, **kwargs):
        calls.append(1)
        raise OSError("disk full")

    monkeypatch.setattr(export_module, "record_exported", failing_after_rows_were_written)
    with pytest.raises(OSError, match="disk full"):
        export_contacts(session, ctx, purpose=EMAIL, topic=None, output=output,
                        excluded=tmp_path / "excluded.csv", created_by="test", now=NOW,
                        chunk_size=2)

    assert calls == [1]  # after the rows were written, before the file was complete
    assert output.read_text(encoding="utf-8") == "the previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "mail") == ["contacts.csv"]
    session.rollback()
    assert session.scalar(select(func.count()).select_from(ExportManifest)) == 0


def test_ages_are_counted_on_the_librarys_date_not_utcs(session, ctx, tmp_path, make_patron):
    turns_13 = date(2013, 6, 1)
    patron = make_patron(email="birthday@example.org", birth_date=turns_13)
    evening_in_denver = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)  # 31 May, 21:00 in Colorado

    next_morning = evening_in_denver + timedelta(hours=9)
    evening = export_contacts(session, ctx, purpose=EMAIL, topic=None, output=tmp_path / "a.csv",
                              excluded=None, created_by="test", now=evening_in_denver)
    morning = export_contacts(session, ctx, purpose=EMAIL, topic=None, output=tmp_path / "b.csv",
                              excluded=None, created_by="test", now=next_morning)

    assert evening.excluded_counts == {"guardian_consent_required": 1} and evening.row_count == 0
    assert morning.excluded_counts == {} and morning.row_count == 1
    assert read_csv(tmp_path / "b.csv")[1][4] == patron.public_id


def test_unknown_purpose_and_topic_raise_from_the_service(session, ctx, tmp_path):
    with pytest.raises(UnknownPurposeError):
        export_contacts(session, ctx, purpose="nope", topic=None, output=tmp_path / "x.csv",
                        excluded=None, created_by="test", now=NOW)
    with pytest.raises(UnknownTopicError):
        export_contacts(session, ctx, purpose=EMAIL, topic="nope", output=tmp_path / "x.csv",
                        excluded=None, created_by="test", now=NOW)
    assert not (tmp_path / "x.csv").exists()
