"""Security headers on every response, no caching of signed-link pages, and plain error pages."""

from __future__ import annotations

import re

import pytest

from consent_service.domain.tokens import LinkKind
from consent_service.web.security import CONTENT_SECURITY_POLICY
from tests.conftest import NOW
from tests.integration.public_pages import csrf_token, link_token, main_text

CSP = ("default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
       "object-src 'none'")


@pytest.fixture
def app(app_factory):
    return app_factory(CLOCK=lambda: NOW)


@pytest.fixture
def patron(make_patron):
    return make_patron(email="ana@example.org")


@pytest.fixture
def token_pages(ctx, patron):
    return [f"/unsubscribe/{link_token(ctx, LinkKind.UNSUBSCRIBE, patron)}",
            f"/preferences/{link_token(ctx, LinkKind.PREFERENCES, patron)}",
            "/unsubscribe/not-a-link", "/preferences/not-a-link"]


OTHER_ADDRESSES = ["/preferences", "/.well-known/gpc.json", "/static/css/site.css", "/healthz",
                   "/no/such/page", "/api/v1/no-such-thing", "/webhooks/no-such-hook"]


def test_the_policy_is_the_one_promised():
    assert CONTENT_SECURITY_POLICY == CSP


def test_every_response_carries_the_security_headers(client, token_pages):
    for address in token_pages + OTHER_ADDRESSES:
        response = client.get(address, buffered=True)
        assert response.headers["Content-Security-Policy"] == CSP, address
        assert response.headers["Referrer-Policy"] == "no-referrer", address
        assert response.headers["X-Content-Type-Options"] == "nosniff", address


def test_pages_opened_by_a_signed_link_are_never_cached_even_when_the_link_is_bad(
        client, token_pages):
    for address in token_pages:
        assert client.get(address).headers["Cache-Control"] == "no-store", address
    for address in ("/preferences", "/static/css/site.css"):
        response = client.get(address, buffered=True)
        assert "no-store" not in response.headers.get("Cache-Control", ""), address


def test_pages_use_no_inline_script_or_style(client, token_pages):
    for address in [*token_pages, "/preferences", "/no/such/page"]:
        html = client.get(address).text
        assert "<script" not in html and "<style" not in html, address
        assert not re.search(r"\sstyle=", html), address
        assert not re.search(r"\son[a-z]+=", html), address


def test_errors_are_a_plain_page_for_people(client):
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert main_text(response.text) == (
        "Page not found There is no page at this address. Please check the link.")


def test_a_wrong_method_gets_a_405_page_that_names_the_allowed_ones(client, ctx, patron):
    response = client.put(f"/unsubscribe/{link_token(ctx, LinkKind.UNSUBSCRIBE, patron)}")
    assert response.status_code == 405
    assert "This page cannot be used that way" in response.text
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "POST"}


def test_an_unexpected_failure_gets_a_500_page_without_a_traceback(app_factory):
    app = app_factory(PROPAGATE_EXCEPTIONS=False)

    def broken() -> str:
        raise RuntimeError("secret detail: database password is hunter2")

    app.add_url_rule("/broken", view_func=broken)
    response = app.test_client().get("/broken")
    assert response.status_code == 500
    assert main_text(response.text) == ("Something went wrong on our side We could not finish "
                                        "your request. Please try again later.")
    assert "hunter2" not in response.text and "Traceback" not in response.text
    assert response.headers["Content-Security-Policy"] == CSP


def test_a_bad_request_page_has_one_plain_line(client):
    response = client.post("/preferences", data={"email": "a@example.org"})  # no CSRF token
    assert response.status_code == 400
    assert main_text(response.text) == ("This form has expired For your safety, forms work for "
                                        "a limited time. Go back, reload the page and try again.")


@pytest.mark.parametrize("address", ["/api/v1/no-such-thing", "/webhooks/no-such-hook"])
def test_machines_get_errors_as_json(client, address):
    response = client.get(address)
    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert response.json == {"code": 404, "status": "Not Found",
                             "message": response.json["message"]}


def test_a_path_that_only_starts_like_the_api_is_a_page(client):
    assert client.get("/apiary").mimetype == "text/html"


def test_forms_work_over_https_although_no_referrer_is_ever_sent(app):
    client = app.test_client()
    base = "https://consent.example.org"
    page = client.get("/preferences", base_url=base)
    response = client.post("/preferences", base_url=base,
                           data={"csrf_token": csrf_token(page.text), "email": "a@example.org"})
    assert response.status_code == 200, main_text(response.text)


def test_pages_say_their_language_and_offer_the_other(client):
    english = client.get("/preferences")
    assert '<html lang="en">' in english.text
    assert '<a href="/preferences?lang=es" lang="es" hreflang="es">Español</a>' in english.text
    spanish = client.get("/preferences", headers={"Accept-Language": "es"})
    assert '<html lang="es">' in spanish.text
    assert '<a href="/preferences?lang=en" lang="en" hreflang="en">English</a>' in spanish.text


def test_the_language_switch_is_remembered(client):
    switched = client.get("/preferences?lang=es")
    assert "lang=es" in switched.headers["Set-Cookie"]
    assert '<html lang="es">' in client.get("/preferences").text
    assert '<html lang="en">' in client.get("/preferences?lang=en").text


def test_the_language_switch_never_links_to_another_site(client):
    response = client.get("/", environ_overrides={"PATH_INFO": "//evil.example/path"})
    assert response.status_code == 404
    assert 'href="//' not in response.text
    assert 'href="/evil.example/path?lang=es"' in response.text


def test_every_page_has_a_skip_link_a_main_landmark_and_one_heading(client, token_pages):
    for address in [*token_pages, "/preferences", "/no/such/page"]:
        html = client.get(address).text
        assert '<a class="skip-link" href="#main">' in html, address
        assert '<main id="main"' in html, address
        assert html.count("<h1") == 1, address
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
