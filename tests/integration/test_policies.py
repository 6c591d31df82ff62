"""Policy versions: `policy publish` and `policy list`, the admin page, the version every decision
records whatever its source, and what the preference center shows of the policy."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.domain.tokens import LinkKind
from consent_service.models import ConsentEvent, PolicyVersion
from consent_service.services.decisions import DecisionRequest, record_decision
from tests.conftest import NOW
from tests.integration.public_pages import csrf_token, link_token, main_text
from tests.integration.staff.desk import alert, signed_in

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def app(app_factory, clock):
    return app_factory(CLOCK=clock)


def summary_file(tmp_path, text="We now keep truncated IP addresses for 90 days.\n",
                 name="summary.txt"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def publish(runner, tmp_path, version="2026-07", effective="2026-07-01", *extra, summary=None):
    path = summary if summary is not None else summary_file(tmp_path)
    return runner.invoke(args=["policy", "publish", "--version", version, "--effective",
                               effective, "--summary", str(path), *extra])


def versions(session):
    session.expire_all()
    return [(p.version, p.effective_at, p.material, p.summary)
            for p in session.scalars(select(PolicyVersion).order_by(PolicyVersion.effective_at))]


def test_publish_adds_a_version_from_the_start_of_the_librarys_day_and_list_shows_it(
        runner, session, tmp_path):
    result = publish(runner, tmp_path, "2026-07", "2026-07-01", "--material")

    assert result.exit_code == 0, result.output
    # midnight in Colorado (MDT, UTC-6)
    assert versions(session) == [("2026-07", datetime(2026, 7, 1, 6, 0, tzinfo=UTC), True,
                                  "We now keep truncated IP addresses for 90 days.")]
    assert "announce it with `policy notify 2026-07`" in result.output
    listed = runner.invoke(args=["policy", "list"])
    assert listed.output == ("2026-07  effective 2026-07-01T06:00:00+00:00  material  told 0  "
                             "We now keep truncated IP addresses for 90 days.\n")


def test_todays_date_takes_effect_now_and_later_decisions_record_it(runner, session, tmp_path,
                                                                    ctx, make_patron, clock):
    assert publish(runner, tmp_path, "2026-06", "2026-06-01").exit_code == 0
    assert versions(session)[0][1] == NOW
    patron = make_patron()
    record_decision(session, ctx, DecisionRequest(
        purpose="postal_marketing", decision=Decision.OPT_OUT, source=Source.STAFF_DESK,
        actor=Actor.STAFF, occurred_at=NOW, patron=patron), now=NOW)
    session.commit()
    assert session.scalar(select(ConsentEvent.policy_version_id)) == \
        session.scalar(select(PolicyVersion.id))


@pytest.mark.parametrize(("version", "effective", "summary", "line"), [
    ("2026-07", "2026-07-01", None, "Error: policy version '2026-07' exists already\n"),
    ("2026-08", "next week", None,
     "Error: the effective date must look like 2027-01-15 (or an ISO 8601 time with an offset), "
     "not 'next week'\n"),
    ("2026-08", "2026-13-01", None,
     "Error: the effective date must look like 2027-01-15 (or an ISO 8601 time with an offset), "
     "not '2026-13-01'\n"),
    ("2026-08", "2026-05-31", None,
     "Error: the effective date 2026-05-31 is in the past; a policy version cannot be back-dated "
     "(decisions made since were recorded under the version then in force)\n"),
    ("2026-08", "2026-06-30", None,
     "Error: the effective date must be after the latest version's (2026-07-01)\n"),
    ("2026-08", "2026-07-01", None,
     "Error: the effective date must be after the latest version's (2026-07-01)\n"),
    ("bad version!", "2026-08-01", None,
     "Error: a version is 1-32 letters, digits, '.', '_' or '-', starting with a letter or "
     "digit, not 'bad version!'\n"),
    ("2026-08", "2026-08-01", "  \n\n",
     "Error: the summary is empty; say in a few lines what changed\n"),
    ("2026-08", "2026-08-01", b"caf\xe9\n", "Error: {path} is not UTF-8 text\n"),
    ("2026-08", "2026-08-01", "a\u202eb",
     "Error: the summary contains a character that is not allowed: U+202E (RIGHT-TO-LEFT "
     "OVERRIDE)\n"),
    ("2026-08", "2026-08-01", "x" * 5001,
     "Error: the summary is 5001 characters; keep it to 5000\n"),
])
def test_publish_refuses_with_one_line_and_writes_nothing(runner, session, tmp_path, version,
                                                         effective, summary, line):
    assert publish(runner, tmp_path, "2026-07", "2026-07-01").exit_code == 0
    path = summary_file(tmp_path, summary, "bad.txt") if summary is not None else None

    result = publish(runner, tmp_path, version, effective, summary=path)

    assert result.exit_code == 1
    assert result.output.startswith(line.format(path=path))
    assert result.output.count("\n") == 1
    assert [v[0] for v in versions(session)] == ["2026-07"]


def test_publish_names_a_summary_file_it_cannot_read(runner, session, tmp_path):
    result = publish(runner, tmp_path, summary=tmp_path / "missing.txt")
    assert result.exit_code == 1
    assert result.output == f"Error: No such file or directory: {tmp_path / 'missing.txt'}\n"
    assert versions(session) == []


def test_list_says_when_there_are_no_versions(runner):
    assert runner.invoke(args=["policy", "list"]).output == \
        "no policy versions yet (publish one with `policy publish`)\n"


@pytest.mark.parametrize("source", list(Source))
def test_every_source_records_the_policy_version_in_force_when_the_decision_was_made(
        session, ctx, make_patron, source):
    old = PolicyVersion(version="2025-01", effective_at=NOW - timedelta(days=400),
                        summary="old", created_at=NOW - timedelta(days=400))
    new = PolicyVersion(version="2026-01", effective_at=NOW - timedelta(days=10),
                        summary="new", created_at=NOW - timedelta(days=10))
    session.add_all([old, new])
    session.commit()
    patron = make_patron()

    for at in (NOW - timedelta(days=500), NOW - timedelta(days=100), NOW):
        record_decision(session, ctx, DecisionRequest(
            purpose="email_marketing", decision=Decision.OPT_OUT if at != NOW - timedelta(
                days=100) else Decision.OPT_IN, source=source, actor=Actor.PATRON,
            occurred_at=at, patron=patron), now=NOW)
    session.commit()

    stamps = [e.policy_version_id for e in session.scalars(
        select(ConsentEvent).order_by(ConsentEvent.occurred_at))]
    assert stamps == [None, old.id, new.id]  # before any policy, then the one in force at the time


def test_no_code_writes_a_ledger_event_but_record_decision():
    """Every entry point (pages, API, imports, SendGrid, staff) records through record_decision,
    so the test above covers every decision path: no other module builds a ConsentEvent."""
    builders = []
    for path in (ROOT / "consent_service").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "ConsentEvent"):
                builders.append(path.relative_to(ROOT).as_posix())
    assert builders == ["consent_service/services/decisions.py"]


def test_a_decision_on_the_preference_center_records_the_version_in_force(
        client, session, ctx, make_patron, runner, tmp_path):
    assert publish(runner, tmp_path, "2026-06", "2026-06-01").exit_code == 0
    patron = make_patron()
    url = f"/preferences/{link_token(ctx, LinkKind.PREFERENCES, patron)}"
    page = client.get(url)
    client.post(url, data={"csrf_token": csrf_token(page.text), "postal_marketing": "opt_out"})
    event = session.scalar(select(ConsentEvent))
    assert event.source == "preference_center"
    assert event.policy_version_id == session.scalar(select(PolicyVersion.id))


def test_the_preference_center_shows_the_version_in_force_what_changed_and_what_is_coming(
        client, session, ctx, make_patron, runner, tmp_path, clock):
    clock.at = NOW - timedelta(days=40)
    assert publish(runner, tmp_path, "2026-05", "2026-04-22", summary=summary_file(
        tmp_path, "Photos: you can now say no at the door.\nVendors: one fewer.")).exit_code == 0
    clock.at = NOW
    assert publish(runner, tmp_path, "2026-07", "2026-07-01", "--material").exit_code == 0
    patron = make_patron()

    text = main_text(client.get(f"/preferences/{link_token(ctx, LinkKind.PREFERENCES, patron)}")
                     .text)

    assert ("The library's privacy policy Version 2026-05, in force since April 22, 2026. "
            "What changed: Photos: you can now say no at the door. Vendors: one fewer. "
            "A new version, 2026-07, takes effect on July 1, 2026. What changes: We now keep "
            "truncated IP addresses for 90 days. Read the whole policy") in text


def test_the_preference_center_shows_the_policy_in_spanish(client, session, ctx, make_patron,
                                                           runner, tmp_path, clock):
    clock.at = NOW - timedelta(days=40)
    spanish = summary_file(tmp_path, "Guardamos las direcciones IP 90 días.", "es.txt")
    assert publish(runner, tmp_path, "2026-05", "2026-04-22", "--summary-es",
                   str(spanish)).exit_code == 0
    clock.at = NOW
    patron = make_patron(preferred_language="es")
    html = client.get(f"/preferences/{link_token(ctx, LinkKind.PREFERENCES, patron)}").text
    assert ("Versión 2026-05, vigente desde el 22 de abril de 2026. Qué cambió: Guardamos las "
            "direcciones IP 90 días.") in main_text(html)
    assert 'href="https://library.example.org/privacy">Lea la política completa</a>' in html
    english = make_patron(preferred_language="en")
    html = client.get(f"/preferences/{link_token(ctx, LinkKind.PREFERENCES, english)}").text
    assert "What changed: We now keep truncated IP addresses for 90 days." in main_text(html)


def test_a_spanish_summary_that_cannot_be_stored_is_refused(runner, session, tmp_path):
    bad = summary_file(tmp_path, "a\x00b", "es.txt")
    result = publish(runner, tmp_path, "2026-07", "2026-07-01", "--summary-es", str(bad))
    assert result.exit_code == 1
    assert result.output == ("Error: the summary in 'es' contains a character that is not "
                             "allowed: U+0000 (control character)\n")
    assert versions(session) == []


# The admin page


def post_policy(client, token, **fields):
    data = {"csrf_token": token, "version": "2026-07", "effective": "2026-07-01",
            "summary": "Shorter IP keeping.\r\nNo more vendor B.", "material": "y", **fields}
    return client.post("/staff/admin/policies", data=data)


def test_an_admin_publishes_a_version_on_the_page_and_sees_it_listed(client, session):
    _, token = signed_in(client, session, "admin")

    response = post_policy(client, token)

    assert response.status_code == 302
    text = main_text(client.get(response.location).text)
    assert ("Policy 2026-07 is published, in force from 2026-07-01. Announce it with "
            "`flask policy notify 2026-07`.") in text
    assert "2026-07 2026-07-01" in text and "yes 0 Shorter IP keeping. No more vendor B." in text
    assert versions(session) == [("2026-07", datetime(2026, 7, 1, 6, 0, tzinfo=UTC), True,
                                  "Shorter IP keeping.\nNo more vendor B.")]
    assert session.scalar(select(PolicyVersion.summaries)) is None  # no Spanish given


def test_the_admin_page_keeps_a_spanish_summary(client, session):
    _, token = signed_in(client, session, "admin")
    assert post_policy(client, token, summary_es="IP: 90 días.").status_code == 302
    assert session.scalar(select(PolicyVersion.summaries)) == {"es": "IP: 90 días."}
    assert "IP: 90 días." in client.get("/staff/admin/policies").text


@pytest.mark.parametrize(("fields", "line"), [
    ({"effective": "2026-05-01"},
     "The effective date 2026-05-01 is in the past; a policy version cannot be back-dated "
     "(decisions made since were recorded under the version then in force)."),
    ({"effective": "soon"}, "Not a valid date value."),
    ({"summary": ""}, "Say what changed."),
    ({"version": ""}, "Enter the version's name."),
    ({"version": "a b"}, "A version is 1-32 letters, digits, '.', '_' or '-', starting with a "
                         "letter or digit, not 'a b'."),
])
def test_the_admin_page_refuses_a_bad_version_with_one_line(client, session, fields, line):
    _, token = signed_in(client, session, "admin")
    response = post_policy(client, token, **fields)
    assert response.status_code == 400
    assert alert(response.text) == line
    assert versions(session) == []


def test_a_duplicate_version_on_the_admin_page_is_refused(client, session):
    _, token = signed_in(client, session, "admin")
    assert post_policy(client, token).status_code == 302
    response = post_policy(client, token, effective="2026-08-01")
    assert response.status_code == 400
    assert alert(response.text) == "Policy version '2026-07' exists already."


@pytest.mark.parametrize("role", ["staff", "marketing"])
def test_only_an_admin_may_publish_a_version(client, session, role):
    _, token = signed_in(client, session, role)
    assert client.get("/staff/admin/policies").status_code == 403
    assert post_policy(client, token).status_code == 403
    assert versions(session) == []
