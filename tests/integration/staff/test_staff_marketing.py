"""The marketing pages: who may open them, the counts and movement before a download, the streamed
and recorded download, past exports, and a vendor export's withdrawn-since list."""

from __future__ import annotations

import contextvars
import csv
import hashlib
import io
import re
from datetime import date, timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event, select

from consent_service.domain.eligibility import Reason
from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.domain.purposes import VENDOR_PURPOSES, PurposeKey
from consent_service.extensions import db
from consent_service.models import ExportedPatron, ExportManifest, Topic
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.export import export_contacts
from consent_service.web.staff_marketing import REASON_WORDS
from consent_service.web.staff_words import SOURCE_WORDS
from tests.conftest import NOW
from tests.integration.public_pages import csrf_token, main_text
from tests.integration.staff.helpers import make_staff, sign_in

CONTACT_UPDATE, MODELING = VENDOR_PURPOSES
EMAIL = PurposeKey.EMAIL_MARKETING.value
HOUR = timedelta(hours=1)
PAGE = "/staff/marketing/exports"
DOWNLOAD = "/staff/marketing/exports/download"


@pytest.fixture
def app(app_factory, clock):  # type: ignore[no-untyped-def]
    return app_factory(CLOCK=clock, EXPORT_CHUNK_SIZE=2)


def decide(session, ctx, patron, decision, *, at, purpose=CONTACT_UPDATE, topic=None,
           source=Source.STAFF_PHONE, actor=Actor.PATRON):
    record_decision(session, ctx, DecisionRequest(
        purpose=purpose, topic=topic, decision=Decision(decision), source=source, actor=actor,
        occurred_at=at, patron=patron), now=max(at, NOW))
    session.commit()


def signed_in_as(client, session, role):
    make_staff(session, role)
    assert sign_in(client, f"{role}@library.example.org").status_code == 302
    return f"{role}@library.example.org"


def download(client, purpose, topic="", **extra):
    page = client.get(f"{PAGE}?purpose={purpose}&topic={topic}")
    return client.post(DOWNLOAD, data={"csrf_token": csrf_token(page.text), "purpose": purpose,
                                       "topic": topic, **extra})


def streamed_download(client, purpose, *, read_chunks=None):
    """Post the download and read its body chunk by chunk as a WSGI server does, in the context the
    request ran in; stop after `read_chunks` chunks to abandon it. Returns (response, chunks)."""
    token = csrf_token(client.get(f"{PAGE}?purpose={purpose}").text)

    def run():
        response = FlaskClient.open(client, DOWNLOAD, method="POST", buffered=False,
                                    data={"csrf_token": token, "purpose": purpose, "topic": ""})
        chunks = []
        for chunk in response.response:
            chunks.append(chunk)
            if len(chunks) == read_chunks:
                break
        response.close()
        return response, chunks

    return contextvars.Context().run(run)


def vendor_export(session, ctx, tmp_path, at=NOW):
    return export_contacts(session, ctx, purpose=CONTACT_UPDATE, topic=None,
                           output=tmp_path / f"vendor-{at:%H%M}.csv", excluded=None,
                           created_by="cli", now=at)


# --- who may open what ------------------------------------------------------------------------

def routes(export_id):
    return [("GET", PAGE), ("GET", f"{PAGE}?purpose={CONTACT_UPDATE}"), ("POST", DOWNLOAD),
            ("GET", f"{PAGE}/{export_id}/withdrawals"),
            ("GET", f"{PAGE}/{export_id}/withdrawals.csv")]


@pytest.mark.parametrize(("role", "get", "post"), [
    (None, 302, 401), ("staff", 403, 403), ("marketing", 200, 200), ("admin", 200, 200)])
def test_who_may_open_each_marketing_route(client, session, ctx, tmp_path, make_patron,
                                           role, get, post):
    make_patron()
    export_id = vendor_export(session, ctx, tmp_path).id
    if role:
        signed_in_as(client, session, role)
    token = csrf_token(client.get("/staff/login" if role is None else "/staff/").text)
    for method, path in routes(export_id):
        if method == "GET":
            response = client.get(path)
            assert response.status_code == get, path
            if get == 302:
                assert "/staff/login?next=" in response.location
        else:
            response = client.post(path, data={"csrf_token": token, "purpose": CONTACT_UPDATE})
            assert response.status_code == post, path
        assert response.headers["Cache-Control"] == "no-store", path


def test_the_staff_home_links_the_exports_for_marketing_and_admin_only(app, session):
    make_staff(session, "staff")
    make_staff(session, "marketing")
    for role, shown in (("staff", False), ("marketing", True)):
        client = app.test_client()
        sign_in(client, f"{role}@library.example.org")
        assert (f'href="{PAGE}"' in client.get("/staff/").text) is shown, role


# --- counts before downloading ------------------------------------------------------------------

def test_the_page_counts_eligible_and_left_out_patrons_by_reason_in_words(
        client, session, ctx, make_patron):
    signed_in_as(client, session, "marketing")
    make_patron(email="ana@example.org")
    make_patron(email="home@example.org")
    make_patron(email="home@example.org")  # shares the address: covered by the row above
    make_patron(email=None)
    make_patron(email="gus@example.org", status="inactive")
    make_patron(email="kid@example.org", birth_date=date(2019, 1, 1))
    said_no = make_patron(email="no@example.org")
    decide(session, ctx, said_no, "opt_out", at=NOW - HOUR, purpose=EMAIL)

    page = client.get(f"{PAGE}?purpose={EMAIL}")

    assert page.status_code == 200
    text = main_text(page.text)
    assert ("Email about programs, services and events: 2 rows in the file, 3 eligible patrons, "
            "4 left out.") in text
    assert "1 eligible patron shares an address with someone in the file." in text
    table = text.split("Left out, by reason Reason Patrons ")[1].split(" Columns for")[0]
    assert table == ("Card inactive 1 No email address 1 Said no (opted out) 1 "
                     "Child without a guardian's consent 1")
    svg = page.text.split('<svg class="chart"')[1].split("</svg>")[0]
    assert '<title id="counts-title">Eligible and left out, by reason</title>' in svg
    assert ("Eligible patrons: 3; Card inactive: 1; No email address: 1; Said no (opted out): 1; "
            "Child without a guardian&#39;s consent: 1. The table below has the same numbers.") in svg
    assert len(re.findall(r"<rect ", svg)) == 5


def test_counts_for_a_topic_and_a_refused_choice(client, session, ctx, make_patron):
    signed_in_as(client, session, "marketing")
    session.add(Topic(key="events", name="Library events", created_at=NOW))
    session.commit()
    stays, stops = make_patron(email="a@example.org"), make_patron(email="b@example.org")
    decide(session, ctx, stops, "opt_out", at=NOW - HOUR, purpose=EMAIL, topic="events")
    assert stays.id

    events = main_text(client.get(f"{PAGE}?purpose={EMAIL}&topic=events").text)
    assert "topic Library events: 1 row in the file, 1 eligible patron, 1 left out." in events
    everything = main_text(client.get(f"{PAGE}?purpose={EMAIL}").text)
    assert "2 rows in the file, 2 eligible patrons, 0 left out." in everything
    assert "Nobody is left out." in everything

    refused = client.get(f"{PAGE}?purpose={CONTACT_UPDATE}&topic=events")
    assert refused.status_code == 400
    assert ("Purpose 'contact_update' has no topics (got topic 'events')."
            in main_text(refused.text))
    assert "Download the CSV" not in refused.text


def test_the_weekly_movement_counts_opt_ins_and_opt_outs_by_source(
        client, session, ctx, make_patron, clock):
    signed_in_as(client, session, "marketing")
    ana, ben = make_patron(email="ana@example.org"), make_patron(email="ben@example.org")
    # NOW is Monday 1 June 2026: this week starts today; the last of the twelve weeks on 16 March
    decide(session, ctx, ana, "opt_out", at=NOW - 2 * HOUR, source=Source.UNSUBSCRIBE_LINK,
           purpose=EMAIL)
    decide(session, ctx, ben, "opt_out", at=NOW - timedelta(days=3), purpose=EMAIL)
    decide(session, ctx, ben, "opt_in", at=NOW - timedelta(days=2), purpose=EMAIL,
           source=Source.PREFERENCE_CENTER)
    decide(session, ctx, ana, "opt_out", at=NOW - timedelta(days=200), purpose=EMAIL)  # too old
    decide(session, ctx, ben, "opt_out", at=NOW - HOUR)  # another purpose

    text = main_text(client.get(f"{PAGE}?purpose={EMAIL}").text)

    table = text.split("Decisions per week, by source Week of Opt-ins Opt-outs ")[1]
    quiet = " ".join(f"2026-{day} 0 0" for day in [
        "03-16", "03-23", "03-30", "04-06", "04-13", "04-20", "04-27", "05-04", "05-11", "05-18"])
    assert table.split(" Past exports")[0] == (
        f"{quiet} 2026-05-25 1 (Preference center: 1) 1 (Staff on the phone: 1) "
        "2026-06-01 0 1 (Unsubscribe link: 1)")


def test_no_page_links_to_a_patron_or_carries_inline_script_or_style(
        client, session, ctx, tmp_path, make_patron):
    signed_in_as(client, session, "marketing")
    patron = make_patron()
    manifest = vendor_export(session, ctx, tmp_path)
    decide(session, ctx, patron, "opt_out", at=NOW + HOUR)
    for path in (PAGE, f"{PAGE}?purpose={CONTACT_UPDATE}", f"{PAGE}/{manifest.id}/withdrawals"):
        html = client.get(path).text
        links = re.findall(r'href="([^"]+)"', html.split("<main", 1)[1])
        assert all(link.startswith(("/staff/marketing/", "/staff/")) for link in links), path
        assert not [link for link in links if "patron" in link], path
        assert "<script" not in html and "<style" not in html and not re.search(r"\sstyle=", html)


# --- the download -----------------------------------------------------------------------------

def test_the_download_streams_the_file_and_records_it_as_an_export_by_the_member(
        client, session, ctx, tmp_path, make_patron):
    email = signed_in_as(client, session, "marketing")
    patrons = [make_patron(email=f"reader{n}@example.org") for n in range(5)]

    response, chunks = streamed_download(client, CONTACT_UPDATE)

    assert response.status_code == 200 and response.is_streamed
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == (
        'attachment; filename="contacts-contact_update-2026-06-01.csv"')
    assert len([chunk for chunk in chunks if chunk]) > 2  # five patrons, two at a time
    body = b"".join(chunks)
    session.expire_all()
    [manifest] = session.scalars(select(ExportManifest)).all()
    assert (manifest.created_by, manifest.purpose, manifest.row_count) == (email, CONTACT_UPDATE, 5)
    assert manifest.sha256 == hashlib.sha256(body).hexdigest()
    assert manifest.file_name == "contacts-contact_update-2026-06-01.csv"
    assert set(session.scalars(select(ExportedPatron.patron_id))) == {p.id for p in patrons}

    cli = export_contacts(session, ctx, purpose=CONTACT_UPDATE, topic=None,
                          output=tmp_path / "cli.csv", excluded=None, created_by="cli", now=NOW)
    assert (tmp_path / "cli.csv").read_bytes() == body and cli.sha256 == manifest.sha256


def test_an_abandoned_download_records_nothing(client, session, make_patron):
    signed_in_as(client, session, "marketing")
    for n in range(5):
        make_patron(email=f"reader{n}@example.org")
    _, chunks = streamed_download(client, CONTACT_UPDATE, read_chunks=1)
    assert chunks[0].startswith(b"patron_id,first_name,")
    session.expire_all()
    assert session.scalars(select(ExportManifest)).all() == []
    assert session.scalars(select(ExportedPatron)).all() == []


def test_a_download_for_an_unknown_purpose_is_refused(client, session):
    signed_in_as(client, session, "marketing")
    assert download(client, "nope").status_code == 400
    assert session.scalars(select(ExportManifest)).all() == []


def test_an_email_list_downloads_in_the_mailing_tool_chosen(client, session, make_patron):
    signed_in_as(client, session, "marketing")
    make_patron(email="reader@example.org", first_name="Ana")
    page = client.get(f"{PAGE}?purpose=email_marketing").text
    assert '<option value="mailchimp">Mailchimp</option>' in page
    assert 'name="format"' not in client.get(f"{PAGE}?purpose={CONTACT_UPDATE}").text
    response = download(client, "email_marketing", format="mailchimp")
    assert response.status_code == 200
    assert response.text.splitlines()[0].startswith("Email Address,First Name,Last Name,")
    session.expire_all()
    assert session.scalars(select(ExportManifest.format)).all() == ["mailchimp"]
    assert download(client, CONTACT_UPDATE, format="mailchimp").status_code == 400
    assert download(client, "email_marketing", format="excel").status_code == 400


# --- past exports and withdrawals ---------------------------------------------------------------

def test_past_exports_show_their_manifests_and_link_withdrawals_for_vendor_exports(
        client, session, ctx, tmp_path, make_patron):
    signed_in_as(client, session, "marketing")
    make_patron()
    vendor = vendor_export(session, ctx, tmp_path)
    by_email = export_contacts(session, ctx, purpose=EMAIL, topic=None,
                               output=tmp_path / "email.csv", excluded=None, created_by="cli",
                               now=NOW + HOUR)

    html = client.get(PAGE).text
    text = main_text(html)
    assert (f"2026-06-01 07:00 MDT email_marketing – 1 {by_email.sha256} cli not sent to a vendor "
            f"2026-06-01 06:00 MDT contact_update – 1 {vendor.sha256} cli Withdrawals since export "
            f"{vendor.id}") in text
    assert f'href="{PAGE}/{vendor.id}/withdrawals"' in html
    assert f'{PAGE}/{by_email.id}/withdrawals' not in html
    assert client.get(f"{PAGE}/{by_email.id}/withdrawals").status_code == 404
    assert client.get(f"{PAGE}/999/withdrawals").status_code == 404


def test_the_withdrawals_page_lists_who_to_ask_the_vendor_to_delete(
        client, runner, session, ctx, tmp_path, make_patron):
    signed_in_as(client, session, "marketing")
    ana, ben = make_patron(card="A1"), make_patron(card="B2")
    make_patron(card="C3")
    manifest = vendor_export(session, ctx, tmp_path)
    decide(session, ctx, ana, "opt_out", at=NOW + HOUR, source=Source.PREFERENCE_CENTER)
    decide(session, ctx, ben, "opt_out", at=NOW + 2 * HOUR)
    decide(session, ctx, ben, "opt_in", at=NOW + 3 * HOUR)

    page = client.get(f"{PAGE}/{manifest.id}/withdrawals")

    text = main_text(page.text)
    assert text.startswith(f"Withdrawn since export {manifest.id} Contact details sent to a "
                           "vendor that keeps them current: 3 patrons in the file made "
                           "2026-06-01 06:00 MDT by cli")
    assert (f"2 patrons withdrawn since the export, earliest first Patron id Card number Withdrew "
            f"How Since then {ana.public_id} A1 2026-06-01 07:00 MDT Preference center still "
            f"withdrawn {ben.public_id} B2 2026-06-01 08:00 MDT Staff on the phone consents again "
            "since 2026-06-01 09:00 MDT") in text
    assert "C3" not in text

    as_csv = client.get(f"{PAGE}/{manifest.id}/withdrawals.csv")
    assert as_csv.mimetype == "text/csv"
    assert as_csv.text == runner.invoke(args=["export", "withdrawals", str(manifest.id)]).stdout
    assert [row[1] for row in csv.reader(io.StringIO(as_csv.text))] == [
        "card_number", "A1", "B2"]


def test_the_withdrawals_page_says_when_nobody_withdrew(client, session, ctx, tmp_path,
                                                        make_patron):
    signed_in_as(client, session, "marketing")
    make_patron()
    manifest = vendor_export(session, ctx, tmp_path)
    assert "Nobody in this file has withdrawn since." in main_text(
        client.get(f"{PAGE}/{manifest.id}/withdrawals").text)


def test_every_purpose_can_be_chosen_and_every_reason_and_source_has_words(
        client, session, ctx):
    signed_in_as(client, session, "marketing")
    html = client.get(PAGE).text
    assert [p.key for p in ctx.catalog] == re.findall(r'<option value="([a-z_]+)"', html)
    assert set(REASON_WORDS) == set(Reason)
    assert set(SOURCE_WORDS) == set(Source)


def test_counting_asks_the_database_as_often_for_thirty_patrons_as_for_three(
        app, client, session, ctx, make_patron):
    app.config["EXPORT_CHUNK_SIZE"] = 2000
    signed_in_as(client, session, "marketing")
    statements = []

    def count(*_args):
        statements.append(1)

    def queries_for_the_counts():
        statements.clear()
        event.listen(db.engine, "before_cursor_execute", count)
        try:
            assert client.get(f"{PAGE}?purpose={CONTACT_UPDATE}").status_code == 200
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        return len(statements)

    for n in range(3):
        decide(session, ctx, make_patron(email=f"few{n}@example.org"), "opt_out", at=NOW - HOUR)
    few = queries_for_the_counts()
    for n in range(27):
        decide(session, ctx, make_patron(email=f"many{n}@example.org"), "opt_out", at=NOW - HOUR)
    assert queries_for_the_counts() == few
