"""Hostile input on every public route (every route of `app.url_map` outside /staff, /api and
/static): oversized bodies, wrong content types, invalid UTF-8, very long tokens, tokens with the
right shape and a wrong signature, tokens of another kind. Every answer is a 4xx with one line
(JSON for the webhook), never a 5xx, and nothing is written to any table. Names holding HTML or
script are shown escaped on every page that shows them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import pytest
from flask import Flask
from markupsafe import escape
from sqlalchemy import func, select

from consent_service.domain.tokens import LinkKind
from consent_service.extensions import db
from consent_service.models import GuardianLink, Patron
from tests.conftest import NOW
from tests.fakes.sendgrid_api import WebhookSigner
from tests.integration.public_pages import csrf_token, link_token, main_text, tampered
from tests.integration.staff.desk import signed_in

# The link kind each route with a `<token>` opens: a route with a token and no row here fails
# test_every_public_route_with_a_token_names_its_link_kind.
TOKEN_KINDS = {
    "public.unsubscribe_page": LinkKind.UNSUBSCRIBE,
    "public.unsubscribe_feedback": LinkKind.UNSUBSCRIBE,
    "public.preferences": LinkKind.PREFERENCES,
    "public.erasure_request": LinkKind.PREFERENCES,
    "public.my_data": LinkKind.PREFERENCES,
    "public.my_data_json": LinkKind.PREFERENCES,
    "public.my_receipt": LinkKind.PREFERENCES,
    "guardians.guardian_request": LinkKind.GUARDIAN,
    "guardians.family": LinkKind.FAMILY,
    "guardians.child_data": LinkKind.FAMILY,
    "guardians.child_data_json": LinkKind.FAMILY,
    "guardians.child_receipt": LinkKind.FAMILY,
}
BIG = 6 * 1024 * 1024  # over every body limit of the service (the webhook's is 5 MiB)
# POST routes whose answer does not depend on the body: the signed link is the key, and the POST
# itself is the opt-out (RFC 8058 senders vary in what they send). Hostile links are refused above.
BODY_NOT_READ = {"public.unsubscribe_page"}
INVALID_UTF8 = b"\xff\xfe\xc3\x28\xa0\xa1\xed\xa0\x80"
SCRIPT = '<script>alert("x")</script>'
ATTRIBUTE = '"><img src=x onerror=alert(1)>'
_signer = WebhookSigner()


@dataclass(frozen=True)
class Route:
    endpoint: str
    rule: str
    method: str

    def __str__(self) -> str:
        return f"{self.method} {self.rule}"


def public_routes() -> list[Route]:
    from consent_service import create_app

    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": "sqlite://",
                      "SECRET_KEY": "collection-only", "MAIL_BACKEND": "memory"})
    return sorted((Route(rule.endpoint, rule.rule, method)
                   for rule in app.url_map.iter_rules()
                   if not rule.rule.startswith(("/staff", "/api", "/static"))
                   for method in rule.methods - {"HEAD", "OPTIONS"}), key=str)


ROUTES = public_routes()
POSTS = [route for route in ROUTES if route.method == "POST"]
WITH_TOKEN = [route for route in ROUTES if "<token>" in route.rule]


@pytest.fixture
def app(app_factory, clock):  # type: ignore[no-untyped-def]
    return app_factory(CLOCK=clock, SENDGRID_WEBHOOK_PUBLIC_KEY=_signer.public_key_base64)


@pytest.fixture
def child(session, make_patron):  # type: ignore[no-untyped-def]
    """An adult patron and a child of 8 linked to them as guardian."""
    guardian = make_patron(card="21000002", email="pat.lopez@example.org")
    kid = make_patron(card="21000003", email=None, birth_date=date(2018, 3, 3))
    session.add(GuardianLink(child_id=kid.id, guardian_id=guardian.id, created_at=NOW))
    session.commit()
    return kid


def rows(session) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """How many rows each table holds."""
    session.expire_all()
    return {table.name: session.scalar(select(func.count()).select_from(table)) or 0
            for table in db.metadata.sorted_tables}


def path_for(route: Route, token: str) -> str:
    return route.rule.replace("<token>", token)


def assert_refused(response, route: Route, before: dict[str, int], session) -> None:  # type: ignore[no-untyped-def]
    """A 4xx with one plain line (JSON with a message for the webhook), and nothing written."""
    body = response.get_data(as_text=True)
    assert 400 <= response.status_code < 500, (str(route), response.status_code, body[:500])
    if route.rule.startswith("/webhooks"):
        assert response.is_json and response.json["message"], body
    else:
        assert response.mimetype == "text/html", response.mimetype
        assert "Traceback" not in body and main_text(body), body[:500]
    assert rows(session) == before, str(route)


def test_every_public_route_with_a_token_names_its_link_kind():
    assert {route.endpoint for route in WITH_TOKEN} == set(TOKEN_KINDS)


HOSTILE_TOKENS: dict[str, Callable[..., str]] = {
    "very long": lambda ctx, kind, public_id: "A" * 4000 + "." + "B" * 4000,
    "wrong signature": lambda ctx, kind, public_id: tampered(link_token(ctx, kind, public_id)),
    "another kind": lambda ctx, kind, public_id: link_token(
        ctx, next(other for other in LinkKind if other is not kind), public_id),
    "not base64": lambda ctx, kind, public_id: "%00%ff..%2e%2e%2fetc",
    "unicode": lambda ctx, kind, public_id: "ñ" * 300 + ".é.ü",
}


@pytest.mark.parametrize("attack", list(HOSTILE_TOKENS))
@pytest.mark.parametrize("route", WITH_TOKEN, ids=str)
def test_a_hostile_token_is_refused_with_one_line_and_writes_nothing(client, session, ctx,
                                                                     make_patron, route, attack):
    patron = make_patron()
    token = HOSTILE_TOKENS[attack](ctx, TOKEN_KINDS[route.endpoint], patron.public_id)
    before = rows(session)
    if route.method == "GET":
        response = client.get(path_for(route, token))
    else:  # the one-click body needs no CSRF token: the link alone must be refused
        response = client.post(path_for(route, token), data={"List-Unsubscribe": "One-Click"})
    assert_refused(response, route, before, session)


def _good_path(route: Route, ctx, patron) -> str:  # type: ignore[no-untyped-def]
    kind = TOKEN_KINDS.get(route.endpoint)
    return path_for(route, link_token(ctx, kind, patron.public_id)) if kind else route.rule


@pytest.mark.parametrize("route", POSTS, ids=str)
def test_an_oversized_body_is_refused_with_413_and_writes_nothing(client, session, ctx,
                                                                  make_patron, route):
    patron = make_patron()
    before = rows(session)
    response = client.post(_good_path(route, ctx, patron), data=b"x=" + b"y" * BIG,
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 413, response.get_data(as_text=True)[:300]
    assert_refused(response, route, before, session)


BODIES = {
    "JSON": (b'{"email": "a@example.org", "List-Unsubscribe": "One-Click"}', "application/json"),
    "plain text": (b"List-Unsubscribe=One-Click", "text/plain"),
    "XML": (b"<?xml version='1.0'?><a>&lt;</a>", "application/xml"),
    "broken multipart": (b"--x\r\nContent-Disposition: form-data\r\n\r\n", "multipart/form-data"),
    "invalid UTF-8 form": (b"email=" + INVALID_UTF8 + b"&List-Unsubscribe=" + INVALID_UTF8,
                           "application/x-www-form-urlencoded"),
    "invalid UTF-8 JSON": (b'[{"email": "' + INVALID_UTF8 + b'"}]', "application/json"),
}


@pytest.mark.parametrize("body", list(BODIES))
@pytest.mark.parametrize("route", [r for r in POSTS if r.endpoint not in BODY_NOT_READ], ids=str)
def test_a_body_of_the_wrong_kind_is_refused_with_one_line_and_writes_nothing(
        client, session, ctx, make_patron, route, body):
    patron = make_patron()
    data, content_type = BODIES[body]
    headers = _signer.headers(data, str(int(NOW.timestamp()))) if "webhooks" in route.rule else {}
    before = rows(session)
    response = client.post(_good_path(route, ctx, patron), data=data, content_type=content_type,
                           headers=headers)
    assert_refused(response, route, before, session)


# The forms a patron or guardian fills in, opened as they would be; the others are refused
# without their CSRF token above.
FORM_PAGES = ("public.request_link", "public.preferences", "guardians.family")


@pytest.mark.parametrize("route", [r for r in POSTS if r.endpoint in FORM_PAGES], ids=str)
def test_invalid_utf8_in_a_form_with_its_csrf_token_is_refused_and_writes_nothing(
        client, session, ctx, child, route):
    parent = session.scalar(select(Patron).where(Patron.card_number == "21000002"))
    family = session.scalar(select(GuardianLink.public_id))  # a family link names the link
    path = (f"/family/{link_token(ctx, LinkKind.FAMILY, family)}"
            if route.endpoint == "guardians.family" else _good_path(route, ctx, parent))
    page = client.get(path)
    assert page.status_code == 200, page.text[:300]
    token = csrf_token(page.text).encode()
    before = rows(session)
    data = (b"csrf_token=" + token + b"&email=" + INVALID_UTF8 + b"&reason=" + INVALID_UTF8
            + b"&shown=" + INVALID_UTF8 + b"&email_marketing=" + INVALID_UTF8)
    response = client.post(path, data=data, content_type="application/x-www-form-urlencoded")
    assert_refused(response, route, before, session)


@pytest.mark.parametrize("payload", [SCRIPT, ATTRIBUTE])
def test_html_in_a_patrons_name_is_shown_escaped_on_every_page_that_shows_it(
        app, client, session, ctx, make_patron, payload):
    guardian = make_patron(card="21000002", email="pat.lopez@example.org",
                           first_name=payload, last_name=payload)
    kid = make_patron(card="21000003", email=None, birth_date=date(2018, 3, 3),
                      first_name=payload, last_name=payload)
    link = GuardianLink(child_id=kid.id, guardian_id=guardian.id, created_at=NOW)
    session.add(link)
    session.commit()
    pages = {
        "preferences": client.get(f"/preferences/{link_token(ctx, LinkKind.PREFERENCES, guardian)}"),
        "unsubscribe": client.get(f"/unsubscribe/{link_token(ctx, LinkKind.UNSUBSCRIBE, guardian)}"),
        "family": client.get(f"/family/{link_token(ctx, LinkKind.FAMILY, link.public_id)}"),
    }
    signed_in(client, session, "admin")
    pages["staff search"] = client.get("/staff/patrons", query_string={"q": payload})
    pages["staff patron"] = client.get(f"/staff/patrons/{kid.public_id}")
    pages["staff guardian"] = client.get(f"/staff/patrons/{guardian.public_id}")
    escaped = str(escape(payload))
    for name, response in pages.items():
        assert response.status_code == 200, name
        assert payload not in response.text, f"{name} shows the name unescaped"
    showing = [name for name, response in pages.items() if escaped in response.text]
    assert len(showing) >= 4, f"only {showing} show the name: the test saw too little"


def test_the_webhook_refuses_a_signed_batch_of_invalid_utf8_and_stores_nothing(client, session):
    body = b'[{"email":"' + INVALID_UTF8 + b'","event":"unsubscribe","timestamp":1}]'
    before = rows(session)
    response = client.post("/webhooks/sendgrid", data=body, content_type="application/json",
                           headers=_signer.headers(body, str(int(NOW.timestamp()))))
    route = Route("webhooks.sendgrid_events", "/webhooks/sendgrid", "POST")
    assert_refused(response, route, before, session)


@pytest.mark.parametrize("route", [r for r in ROUTES if r.method == "GET"], ids=str)
def test_a_get_with_a_hostile_query_string_answers_without_error_and_writes_nothing(
        client, session, ctx, make_patron, route):
    patron = make_patron()
    before = rows(session)
    query = "q=" + "%ff%fe%00" * 500 + "&" + "&".join(f"k{n}=%c3%28" for n in range(500))
    response = client.get(_good_path(route, ctx, patron) + "?" + query)
    assert response.status_code < 500, response.get_data(as_text=True)[:300]
    assert rows(session) == before


def test_every_public_route_is_attacked(app: Flask):
    """The routes above are read from the app: at least the ones the design names."""
    rules = {route.rule for route in ROUTES}
    assert {"/unsubscribe/<token>", "/preferences/<token>", "/preferences", "/guardian/<token>",
            "/family/<token>", "/webhooks/sendgrid", "/healthz", "/readyz"} <= rules
