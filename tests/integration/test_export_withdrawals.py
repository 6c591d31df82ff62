"""The disclosure record: every export keeps the patrons its file contained, and a vendor export's
"withdrawn since" list (service and `export withdrawals`) is exact after exports and withdrawals."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.domain.purposes import VENDOR_PURPOSES, PurposeKey
from consent_service.models import ExportedPatron, ExportManifest
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.disclosures import (
    NotSentToVendorError,
    UnknownExportError,
    withdrawn_since,
)
from consent_service.services.export import export_contacts
from tests.conftest import NOW

CONTACT_UPDATE, MODELING = VENDOR_PURPOSES
EMAIL = PurposeKey.EMAIL_MARKETING.value
HOUR = timedelta(hours=1)
WITHDRAWAL_HEADER = ["patron_id", "card_number", "withdrawn_at", "source", "consents_again_since"]


@pytest.fixture
def app(app_factory, clock):  # type: ignore[no-untyped-def]
    return app_factory(CLOCK=clock)


def decide(session, ctx, patron, decision, *, at, recorded=None, purpose=CONTACT_UPDATE,
           actor=Actor.PATRON, source=Source.STAFF_PHONE):
    record_decision(session, ctx, DecisionRequest(
        purpose=purpose, decision=Decision(decision), source=source, actor=actor,
        occurred_at=at, patron=patron), now=recorded or at)
    session.commit()


def export(session, ctx, tmp_path, at, purpose=CONTACT_UPDATE, chunk_size=2000):
    return export_contacts(session, ctx, purpose=purpose, topic=None,
                           output=tmp_path / f"export-{at:%H%M%S}-{purpose}.csv", excluded=None,
                           created_by="test", now=at, chunk_size=chunk_size)


def listed(session, manifest):
    """The withdrawn-since list as (card number, withdrawn at, source, consents again since)."""
    return [(w.card_number, w.withdrawn_at, w.source, w.consents_again_since)
            for w in withdrawn_since(session, manifest.id).withdrawals]


def test_each_export_records_exactly_the_patrons_whose_rows_its_file_has(
        session, ctx, tmp_path, make_patron):
    home = [make_patron(email="home@example.org") for _ in range(2)]
    solo = make_patron(email="solo@example.org")
    no_email = make_patron(email=None)  # left out of the email file, in the vendor file
    kid = make_patron(email="kid@example.org", birth_date=NOW.date().replace(year=2020))

    by_email = export(session, ctx, tmp_path, NOW, purpose=EMAIL, chunk_size=2)
    to_vendor = export(session, ctx, tmp_path, NOW, chunk_size=2)

    contained = {(row.export_id, row.patron_id, row.address_key)
                 for row in session.scalars(select(ExportedPatron))}
    assert contained == {
        (by_email.id, home[0].id, home[0].address_key),  # one row per address: the lowest id
        (by_email.id, solo.id, solo.address_key),
        *((to_vendor.id, patron.id, None) for patron in [*home, solo, no_email]),
    }
    assert kid.id not in {patron_id for _, patron_id, _ in contained}
    assert (by_email.row_count, to_vendor.row_count) == (2, 4)


def test_an_export_that_fails_records_neither_manifest_nor_patrons(
        session, ctx, tmp_path, make_patron):
    for n in range(3):
        make_patron(email=f"reader{n}@example.org")
    with pytest.raises(OSError):
        export_contacts(session, ctx, purpose=CONTACT_UPDATE, topic=None,
                        output=tmp_path / "missing-folder" / "out.csv", excluded=None,
                        created_by="test", now=NOW)
    session.rollback()
    assert session.scalar(select(func.count()).select_from(ExportManifest)) == 0
    assert session.scalar(select(func.count()).select_from(ExportedPatron)) == 0


def test_withdrawn_since_lists_exactly_who_was_in_the_file_and_said_no_afterwards(
        session, ctx, tmp_path, make_patron):
    ana, ben, cy, dee, eve, fay, gil, hal = (
        make_patron(card=f"C{n}", email=f"{name}@example.org") for n, name in
        enumerate(["ana", "ben", "cy", "dee", "eve", "fay", "gil", "hal"]))
    decide(session, ctx, ben, "opt_out", at=NOW - 5 * HOUR)  # before: left out, never listed
    decide(session, ctx, fay, "opt_in", at=NOW - HOUR)

    first = export(session, ctx, tmp_path, NOW)
    assert first.row_count == 7

    decide(session, ctx, hal, "opt_out", at=NOW)  # the same instant, recorded after the export
    decide(session, ctx, ana, "opt_out", at=NOW + HOUR, source=Source.UNSUBSCRIBE_LINK)
    decide(session, ctx, cy, "opt_out", at=NOW + HOUR)
    decide(session, ctx, cy, "opt_in", at=NOW + 3 * HOUR)  # consents again
    # a paper form dated before the export, entered after it: the vendor got someone who said no
    decide(session, ctx, eve, "opt_out", at=NOW - 2 * HOUR, recorded=NOW + 4 * HOUR,
           source=Source.IMPORT)
    # one dated before fay's opt-in, which the export relied on: not a withdrawal
    decide(session, ctx, fay, "opt_out", at=NOW - 2 * HOUR, recorded=NOW + 4 * HOUR)
    decide(session, ctx, gil, "opt_out", at=NOW + HOUR, purpose=MODELING)  # another purpose
    decide(session, ctx, ben, "opt_in", at=NOW + HOUR)

    assert listed(session, first) == [
        ("C4", NOW - 2 * HOUR, "import", None),
        ("C7", NOW, "staff_phone", None),
        ("C0", NOW + HOUR, "unsubscribe_link", None),
        ("C2", NOW + HOUR, "staff_phone", NOW + 3 * HOUR),
    ]
    assert [w.patron_id for w in withdrawn_since(session, first.id).withdrawals] == [
        eve.public_id, hal.public_id, ana.public_id, cy.public_id]
    assert dee.id and gil.id  # in the file, never withdrew from contact_update: not listed

    second = export(session, ctx, tmp_path, NOW + 5 * HOUR)
    decide(session, ctx, cy, "opt_out", at=NOW + 6 * HOUR, source=Source.PREFERENCE_CENTER)
    decide(session, ctx, ben, "opt_out", at=NOW + 6 * HOUR)
    assert listed(session, second) == [("C1", NOW + 6 * HOUR, "staff_phone", None),
                                       ("C2", NOW + 6 * HOUR, "preference_center", None)]
    # the first list keeps cy's first withdrawal; they no longer consent
    assert ("C2", NOW + HOUR, "staff_phone", None) in listed(session, first)


def test_a_child_in_the_file_by_a_guardians_consent_is_listed_when_withdrawn(
        session, ctx, tmp_path, make_patron):
    child = make_patron(card="K1", email=None, birth_date=NOW.date().replace(year=2019))
    decide(session, ctx, child, "opt_in", at=NOW - HOUR, actor=Actor.GUARDIAN)
    manifest = export(session, ctx, tmp_path, NOW)
    assert manifest.row_count == 1
    decide(session, ctx, child, "opt_in", at=NOW + HOUR)  # the child's own: not effective
    assert listed(session, manifest) == []
    decide(session, ctx, child, "opt_out", at=NOW + 2 * HOUR, actor=Actor.GUARDIAN)
    decide(session, ctx, child, "opt_in", at=NOW + 3 * HOUR)  # the child's own: changes nothing
    assert listed(session, manifest) == [("K1", NOW + 2 * HOUR, "staff_phone", None)]


def test_withdrawals_are_only_for_vendor_exports(session, ctx, tmp_path, make_patron):
    make_patron()
    by_email = export(session, ctx, tmp_path, NOW, purpose=EMAIL)
    with pytest.raises(NotSentToVendorError, match="not sent to a vendor"):
        withdrawn_since(session, by_email.id)
    with pytest.raises(UnknownExportError, match="no export has the id 999"):
        withdrawn_since(session, 999)


def test_export_withdrawals_prints_the_list_as_csv_or_writes_it_to_a_file(
        runner, session, ctx, tmp_path, make_patron, clock):
    ana = make_patron(card="A1", email="ana@example.org")
    exported = runner.invoke(args=["export", "contacts", "--purpose", CONTACT_UPDATE,
                                   "--output", str(tmp_path / "vendor.csv")])
    assert exported.exit_code == 0, exported.output
    export_id = session.scalar(select(ExportManifest.id))
    decide(session, ctx, ana, "opt_out", at=NOW + HOUR)
    decide(session, ctx, ana, "opt_in", at=NOW + 2 * HOUR, source=Source.PREFERENCE_CENTER)

    printed = runner.invoke(args=["export", "withdrawals", str(export_id)])
    assert printed.exit_code == 0, printed.output
    lines = printed.stdout
    assert list(csv.reader(io.StringIO(lines))) == [
        WITHDRAWAL_HEADER,
        [ana.public_id, "A1", "2026-06-01T13:00:00+00:00", "staff_phone",
         "2026-06-01T14:00:00+00:00"],
    ]
    assert printed.stderr.strip() == f"1 patron(s) withdrawn since export {export_id}"

    written = runner.invoke(args=["export", "withdrawals", str(export_id), "--output",
                                  str(tmp_path / "withdrawn.csv")])
    assert written.exit_code == 0 and written.stdout == ""
    assert (tmp_path / "withdrawn.csv").read_text(encoding="utf-8") == lines


@pytest.mark.parametrize(("export_id", "line"), [
    ("999", "Error: no export has the id 999"),
    ("1", "Error: export 1 is for email_marketing, which is not sent to a vendor; withdrawals "
          "are kept for contact_update, third_party_modeling"),
])
def test_export_withdrawals_refuses_in_one_line(runner, tmp_path, make_patron, export_id, line):
    make_patron()
    runner.invoke(args=["export", "contacts", "--purpose", EMAIL, "--output",
                        str(tmp_path / "email.csv")])
    result = runner.invoke(args=["export", "withdrawals", export_id])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [line]
