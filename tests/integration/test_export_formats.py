"""`export contacts --format`: the same people, in the columns each mailing tool's contact import
expects, with formula cells neutralised and the format in the manifest."""

from __future__ import annotations

import csv
import os
import stat
from datetime import timedelta

import pytest
from sqlalchemy import select

from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.models import ExportManifest
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.export import stream_contacts
from tests.conftest import NOW

# Each tool's documented contact import header (module docstring of domain/export_formats.py).
DOCUMENTED = {
    "generic": ["email", "first_name", "last_name", "preferred_language", "patron_id",
                "unsubscribe_url", "preferences_url"],
    "sendgrid": ["email", "first_name", "last_name", "patron_id", "preferred_language",
                 "unsubscribe_url", "preferences_url"],
    "mailchimp": ["Email Address", "First Name", "Last Name", "Patron ID", "Language",
                  "Unsubscribe URL", "Preferences URL"],
    "constant_contact": ["Email Address", "First Name", "Last Name", "Patron ID", "Language",
                         "Unsubscribe URL", "Preferences URL"],
}


@pytest.fixture
def people(session, ctx, make_patron):
    """Three addresses: an ordinary patron, a formula-looking name, one opted out; and a household
    member at the first address."""
    ana = make_patron(card="1", first_name="Ana", last_name="Reyes", email="ana@example.org",
                      preferred_language="es")
    make_patron(card="2", first_name="Lucia", last_name="Reyes", email="ana@example.org")
    risky = make_patron(card="3", first_name="=HYPERLINK(\"http://evil.example\")",
                        last_name="@SUM(A1)", email="risky@example.org")
    gone = make_patron(card="4", first_name="Sam", last_name="", email="sam@example.org")
    record_decision(session, ctx, DecisionRequest(
        purpose="email_marketing", decision=Decision.OPT_OUT, source=Source.UNSUBSCRIBE_LINK,
        actor=Actor.PATRON, occurred_at=NOW - timedelta(hours=1), patron=gone), now=NOW)
    session.commit()
    return ana, risky


def export(runner, tmp_path, file_format):
    output = tmp_path / f"{file_format}.csv"
    result = runner.invoke(args=["export", "contacts", "--purpose", "email_marketing", "--format",
                                 file_format, "--output", str(output)])
    assert result.exit_code == 0, result.output
    with output.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle)), result


@pytest.mark.parametrize("file_format", sorted(DOCUMENTED))
def test_each_format_writes_its_tools_header_and_the_same_people(runner, session, tmp_path,
                                                                 people, file_format):
    ana, _ = people
    (header, *rows), result = export(runner, tmp_path, file_format)
    assert header == DOCUMENTED[file_format]
    by_email = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert sorted(by_email) == ["ana@example.org", "risky@example.org"]  # Sam opted out
    first, last = header[1], header[2]
    assert (by_email["ana@example.org"][first], by_email["ana@example.org"][last]) == (
        "Ana", "Reyes")
    assert by_email["risky@example.org"][first] == "'=HYPERLINK(\"http://evil.example\")"
    assert by_email["risky@example.org"][last] == "'@SUM(A1)"
    links = [column for column in header if "url" in column.lower()]
    assert len(links) == 2
    for column in links:  # merge fields hold 255 bytes in Mailchimp
        url = by_email["ana@example.org"][column]
        assert url.startswith("https://consent.example.org/") and len(url.encode()) <= 255
    assert ana.public_id in by_email["ana@example.org"].values()
    manifest = session.scalars(select(ExportManifest)).one()
    assert manifest.format == file_format
    assert f"as {file_format};" in result.output


def test_libraryaware_takes_three_columns_and_no_header(runner, session, tmp_path, people,
                                                       make_patron):
    make_patron(card="5", first_name="", last_name="", email="noname@example.org")
    rows, _ = export(runner, tmp_path, "libraryaware")
    assert sorted(rows) == sorted([
        ["ana@example.org", "Ana", "Reyes"],
        ["noname@example.org", " ", " "],  # every cell of the first row must hold something
        ["risky@example.org", "'=HYPERLINK(\"http://evil.example\")", "'@SUM(A1)"],
    ])


def test_a_mailing_tool_format_for_a_postal_purpose_is_refused(runner, session, people, tmp_path):
    result = runner.invoke(args=["export", "contacts", "--purpose", "postal_marketing", "--format",
                                 "mailchimp", "--output", str(tmp_path / "x.csv")])
    assert result.exit_code == 1
    assert ("format mailchimp is a mailing tool's contact list: it is for email purposes"
            in result.output)
    assert not (tmp_path / "x.csv").exists()
    assert session.scalars(select(ExportManifest)).first() is None


def test_a_download_in_a_tools_format_names_the_format_and_writes_the_same_bytes(
        runner, session, ctx, tmp_path, people):
    streamed = stream_contacts(session, ctx, purpose="email_marketing", topic=None,
                               created_by="test", now=NOW, file_format="mailchimp")
    body = b"".join(streamed.chunks).decode()
    assert streamed.file_name == "contacts-email_marketing-mailchimp-2026-06-01.csv"
    assert body.splitlines()[0] == ",".join(DOCUMENTED["mailchimp"])


def test_an_export_to_dev_null_writes_into_the_device_and_leaves_it_a_device(runner, session,
                                                                             people):
    """A move onto /dev/null (the temporary file's way into place) would replace the device
    itself, for every program on the machine, when run as root."""
    result = runner.invoke(args=["export", "contacts", "--purpose", "email_marketing", "--output",
                                 os.devnull, "--excluded", os.devnull])
    assert result.exit_code == 0, result.output
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    assert session.scalars(select(ExportManifest)).one().row_count == 2
