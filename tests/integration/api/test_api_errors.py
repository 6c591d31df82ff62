"""Errors: JSON for the API (never a 5xx for bad bodies), HTML pages for people, as before the API
took its place beside them."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from consent_service.models import ConsentEvent
from tests.integration.api.helpers import bearer, decision_body
from tests.integration.public_pages import main_text

ERROR_KEYS = {"code", "status", "message"}


@pytest.fixture
def ana(make_patron):  # type: ignore[no-untyped-def]
    return make_patron(card="1001", email="ana@example.org")


def post_raw(client, key, data, content_type="application/json"):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/decisions", data=data, content_type=content_type,
                       headers=bearer(key))


def test_pages_keep_their_html_error_pages(client):
    missing = client.get("/no/such/page")
    assert (missing.status_code, missing.mimetype) == (404, "text/html")
    assert main_text(missing.text).startswith("Page not found")
    wrong_method = client.delete("/preferences")
    assert (wrong_method.status_code, wrong_method.mimetype) == (405, "text/html")
    expired_form = client.post("/preferences", data={"email": "a@example.org"})  # no CSRF token
    assert (expired_form.status_code, expired_form.mimetype) == (400, "text/html")
    assert main_text(expired_form.text).startswith("This form has expired")


def test_api_errors_are_json_with_a_message(client, key):
    for response in (client.get("/api/v1/no-such-thing"),
                     client.delete("/api/v1/events", headers=bearer(key)),
                     client.get("/api/v1/events")):
        assert response.mimetype == "application/json"
        assert set(response.json) == ERROR_KEYS
        assert response.json["message"]
    assert client.delete("/api/v1/events", headers=bearer(key)).status_code == 405


@pytest.mark.parametrize(("data", "message"), [
    ("{not json", "the body is not valid JSON"),
    ("", "the body is not valid JSON"),
    ('{"card_number": "1001",}', "the body is not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "the JSON body is nested too deeply"),
    ('{"card_number": ' + "9" * 5000 + "}", "the body is not valid JSON"),
    (b'{"card_number": "\xff"}', "the body is not valid JSON"),
])
def test_a_body_that_is_not_json_is_400(client, key, ana, data, message):
    response = post_raw(client, key, data)
    assert response.status_code == 400
    assert response.json == {"code": 400, "status": "Bad Request", "message": message}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", ""])
def test_a_body_that_is_not_sent_as_json_is_415(client, key, ana, content_type):
    response = post_raw(client, key, '{"card_number": "1001"}', content_type)
    assert response.status_code == 415
    assert response.json["message"] == "send the body as JSON, with `Content-Type: application/json`"


@pytest.mark.parametrize("body", [
    [], "opt_out", 1e308, None,
    {**decision_body("1001"), "card_number": 10 ** 30},
    {**decision_body("1001"), "card_number": 1e400},  # json: Infinity
    {**decision_body("1001"), "occurred_at": 1.5e300},
    {**decision_body("1001"), "topic": ["events"]},
    {**decision_body("1001"), "card_number": "1001\u0000"},
    {**decision_body("1001"), "source_detail": "desk\u202e"},
    {**decision_body("1001"), "actor_ref": "x" * 10_000},
])
def test_wrong_values_are_422_with_field_errors_never_a_5xx(client, key, session, ana, body):
    response = post_raw(client, key, json.dumps(body))
    assert response.status_code == 422, response.get_data(as_text=True)
    assert set(response.json) == ERROR_KEYS | {"errors"}
    assert response.json["errors"]
    assert session.scalar(select(func.count()).select_from(ConsentEvent)) == 0


def test_huge_and_odd_query_values_are_422(client, key, ana):
    for query in ({"card_number": "1" * 100_000, "purpose": "photo_video"},
                  {"card_number": "1001", "purpose": "photo_video", "topic": "\x7f"},
                  {"patron_id": "", "purpose": "photo_video"}):
        response = client.get("/api/v1/eligibility", query_string=query, headers=bearer(key))
        assert response.status_code == 422, query


def test_a_body_over_the_limit_is_413(app_factory, make_key, session):
    app = app_factory(API_MAX_BYTES=1000)
    with app.app_context():
        from consent_service.extensions import db
        from consent_service.services.api_keys import create_api_key
        from tests.conftest import NOW

        _, key = create_api_key(db.session, "small", ["patrons:write"], now=NOW)
    body = {"patrons": [{"card_number": str(n)} for n in range(200)]}
    response = app.test_client().post("/api/v1/patrons:batch", json=body, headers=bearer(key))
    assert response.status_code == 413
    assert response.mimetype == "application/json"


@pytest.mark.parametrize("path", [
    "/api/v1/events?limt=5",
    "/api/v1/exports/contacts?purpose=email_marketing&topc=events",
    "/api/v1/eligibility?card_number=1001&purpose=email_marketing&topc=events",
])
def test_an_unknown_query_parameter_is_refused_not_ignored(client, key, ana, path):
    """Found by the API fuzzer: a misspelt parameter used to be dropped, so `topc=events` on an
    export handed over everyone who may get any library email, and no export is recorded now."""
    response = client.get(path, headers=bearer(key))
    assert response.status_code == 422, response.get_data(as_text=True)
    misspelt = path.rsplit("&", 1)[-1].split("?")[-1].split("=")[0]
    assert response.json["errors"]["query"] == {misspelt: ["Unknown field."]}
    assert client.get("/api/v1/exports/contacts?purpose=email_marketing",
                      headers=bearer(key)).headers["X-Export-Id"] == "1"
