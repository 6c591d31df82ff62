"""Header injection: names that hold CR/LF or RFC 2047 encoded words (which a mail library may
decode into CR/LF) never reach an email header. Patrons arrive as an import and through the API;
every message queued and every .eml written is then read back header by header."""

from __future__ import annotations

import csv
import email
import email.policy
from pathlib import Path

import pytest
from sqlalchemy import select

from consent_service.models import OutboxMessage, Patron
from consent_service.services.api_keys import create_api_key
from tests.conftest import NOW

HEADER = "card_number,first_name,last_name,email,birth_date,guardian_email"
INJECTED = "evil@attacker.example"
# what a child's or guardian's name may try, as it would be typed into an ILS or an API call
ENCODED_WORDS = [
    f"=?utf-8?q?Maya=0D=0ABcc:_{INJECTED}?=",
    "=?UTF-8?B?TWF5YQ0KQmNjOiBldmlsQGF0dGFja2VyLmV4YW1wbGU=?=",  # "Maya\r\nBcc: evil@..."
    f"Maya =?utf-8?q?=0ABcc:_{INJECTED}?= Lopez",
]
RAW_BREAKS = ["Maya\r\nBcc: " + INJECTED, "Maya\nBcc: " + INJECTED, "Maya\rBcc: " + INJECTED]


@pytest.fixture
def app(app_factory, clock, tmp_path):  # type: ignore[no-untyped-def]
    return app_factory(CLOCK=clock, MAIL_BACKEND="file", MAIL_FILE_DIR=str(tmp_path / "mail"))


def import_file(tmp_path: Path, rows: list[list[str]]) -> Path:
    path = tmp_path / "patrons.csv"
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER.split(","))
        writer.writerows(rows)
    return path


def assert_no_injected_header(tmp_path: Path, session) -> int:  # type: ignore[no-untyped-def]
    """No queued value holds a line break; no .eml has a Cc or Bcc or a second To. The files."""
    session.expire_all()
    queued = list(session.scalars(select(OutboxMessage)))
    for message in queued:
        for value in (message.subject, message.to_address, *message.headers.values()):
            assert "\r" not in (value or "") and "\n" not in (value or ""), value
    files = sorted((tmp_path / "mail").glob("*.eml"))
    for path in files:
        raw = path.read_bytes()
        head = raw.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in raw else raw.split(b"\n\n", 1)[0]
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        names = [name.lower() for name in parsed]
        assert "bcc" not in names and "cc" not in names, head
        assert names.count("to") == 1 and INJECTED not in str(parsed["To"]), head
        for line in head.splitlines():
            assert not line.lower().startswith((b"bcc:", b"cc:")), head
    return len(files)


def test_names_with_line_breaks_or_encoded_words_never_reach_a_mail_header(
        app, runner, session, tmp_path):
    rows = [[f"3100{n:04d}", name, name, "", "2019-04-04", f"guardian{n}@example.org"]
            for n, name in enumerate(ENCODED_WORDS + RAW_BREAKS)]
    result = runner.invoke(args=["patrons", "import", str(import_file(tmp_path, rows))])
    # the raw breaks are refused as control characters; the encoded words are plain text
    assert "control character" in result.output, result.output
    _, key = create_api_key(session, "ils", ["patrons:write"], now=NOW)
    client = app.test_client()
    for n, name in enumerate(RAW_BREAKS):
        response = client.put(f"/api/v1/patrons/3200{n:04d}", json={
            "first_name": name, "birth_date": "2019-04-04",
            "guardian_email": f"api.guardian{n}@example.org"},
            headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 422, response.get_data(as_text=True)
    for n, name in enumerate(ENCODED_WORDS):
        response = client.put(f"/api/v1/patrons/3300{n:04d}", json={
            "first_name": name, "birth_date": "2019-04-04",
            "guardian_email": f"api.guardian{n}@example.org"},
            headers={"Authorization": f"Bearer {key}"})
        assert response.status_code in (200, 201), response.get_data(as_text=True)
    assert runner.invoke(args=["worker", "--once"]).exit_code == 0

    session.expire_all()
    stored = {p.first_name for p in session.scalars(select(Patron))}
    assert not any("\r" in name or "\n" in name for name in stored if name)
    assert set(ENCODED_WORDS) <= stored
    queued = session.scalars(select(OutboxMessage)).all()
    assert len(queued) >= len(ENCODED_WORDS), "no guardian notice was queued: nothing was tested"
    assert assert_no_injected_header(tmp_path, session) >= len(ENCODED_WORDS)
