"""Access: every /staff and /api route has a row in an authorisation matrix (so a new route without
one fails here), signing in starts a fresh session, the session cookie's flags in production, the
lockout holds whichever client asks, and the logs carry no link, key, address or patron name."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest
from sqlalchemy import update

from consent_service.domain.tokens import LinkKind
from consent_service.models import StaffUser
from tests.conftest import NOW
from tests.integration.api.test_api_authorisation import CARD as API_CARD
from tests.integration.api.test_api_authorisation import ROUTES as API_ROUTES
from tests.integration.public_pages import csrf_token, link_token
from tests.integration.staff.desk import anonymous_token, signed_in
from tests.integration.staff.helpers import PASSWORD, make_staff, sign_in
from tests.integration.staff.routes import DOOR_ROUTES, STAFF_ROUTES
from tests.log_watch import WATCH

# The API routes no key is needed for, with the answer anyone gets.
OPEN_API_ROUTES = {("GET", "/api/v1/openapi.json"): 200}
PLACEHOLDER = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>|\{([a-z_]+)\}")


def shape(path: str) -> str:
    """A path with every placeholder (`<int:task_id>`, `{task}`, a test's card number) as `*`."""
    path = path.split("?")[0].replace(API_CARD, "*")
    return PLACEHOLDER.sub("*", path)


def listed_routes() -> set[tuple[str, str]]:
    rows = [(r.method, r.path) for r in STAFF_ROUTES] + [(r.method, r.path) for r in DOOR_ROUTES]
    rows += [(method, path) for method, path, *_ in API_ROUTES] + list(OPEN_API_ROUTES)
    return {(method, shape(path)) for method, path in rows}


def test_every_staff_and_api_route_of_the_app_has_a_row_in_a_matrix(app):
    served = {(method, shape(rule.rule)) for rule in app.url_map.iter_rules()
              if rule.rule.startswith(("/staff", "/api"))
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert served, "no /staff or /api route found: the app's routes were not read"
    missing = sorted(served - listed_routes())
    assert not missing, (f"routes with no row in tests/integration/staff/routes.py or the API "
                         f"matrix: {missing}")


def test_the_completeness_check_notices_a_route_without_a_row(app):
    @app.get("/staff/a-page-nobody-listed")
    def unlisted() -> str:  # pragma: no cover - never requested
        return ""

    served = {(method, shape(rule.rule)) for rule in app.url_map.iter_rules()
              if rule.rule.startswith("/staff") for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert served - listed_routes() == {("GET", "/staff/a-page-nobody-listed")}


@pytest.mark.parametrize("route", DOOR_ROUTES, ids=str)
def test_each_door_route_answers_anonymous_and_signed_in_clients_as_listed(client, session,
                                                                           route):
    for who in ("anonymous", "marketing"):
        token = anonymous_token(client) if who == "anonymous" else signed_in(client, session, who)[1]
        if route.method == "GET":
            response = client.get(route.path)
        else:
            response = client.post(route.path, data={"csrf_token": token})
        expected = route.anonymous if who == "anonymous" else route.signed_in
        assert response.status_code == expected, (who, response.text[:500])
        assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("path", list(OPEN_API_ROUTES))
def test_the_open_api_routes_need_no_key(client, path):
    method, url = path
    assert client.open(url, method=method).status_code == OPEN_API_ROUTES[path]


def session_cookie(client) -> str | None:  # type: ignore[no-untyped-def]
    cookie = client.get_cookie("session")
    return cookie.value if cookie is not None else None


def test_signing_in_replaces_the_session_so_a_planted_one_gives_nothing(app, session):
    """Session fixation: a session (and its CSRF token) obtained before sign-in, as an attacker
    could plant it, is not the signed-in one and opens nothing afterwards."""
    make_staff(session, "admin")
    victim, attacker = app.test_client(), app.test_client()
    planted_token = csrf_token(victim.get("/staff/login").text)
    planted = session_cookie(victim)
    assert planted is not None
    attacker.set_cookie("session", planted)

    response = victim.post("/staff/login", data={"csrf_token": planted_token,
                                                 "email": "admin@library.example.org",
                                                 "password": PASSWORD})
    assert response.status_code == 302
    assert session_cookie(victim) not in (None, planted)
    assert victim.get("/staff/").status_code == 200
    assert attacker.get("/staff/").status_code == 302  # the planted session is still anonymous
    # the CSRF token known before sign-in does not work in the signed-in session
    refused = victim.post("/staff/admin/topics", data={"csrf_token": planted_token, "key": "x",
                                                       "name": "X"})
    assert refused.status_code == 400


def test_signing_out_clears_the_session_cookie(client, session):
    _, token = signed_in(client, session, "staff")
    assert client.post("/staff/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/staff/").status_code == 302


def test_in_production_the_session_cookie_is_secure_httponly_and_samesite(app_factory, tmp_path):
    app = app_factory(CONSENT_ENV="production", SECRET_KEY="s" * 48,
                      ADDRESS_HASH_KEY="h" * 48, MAIL_BACKEND="file",
                      SENDGRID_WEBHOOK_PUBLIC_KEY="")
    response = app.test_client().get("/staff/login")
    assert response.status_code == 200
    [cookie] = [value for name, value in response.headers.items() if name == "Set-Cookie"
                and value.startswith("session=")]
    flags = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")}
    assert "secure" in flags and "httponly" in flags, cookie
    assert flags["samesite"].lower() == "samesite=lax", cookie


def test_a_locked_account_stays_locked_for_every_client_and_says_no_more_than_a_wrong_password(
        app, session, clock):
    make_staff(session, "admin")
    first, second = app.test_client(), app.test_client()
    for _ in range(5):
        assert sign_in(first, "admin@library.example.org", "a wrong password").status_code == 401
    wrong = sign_in(second, "admin@library.example.org", "another wrong one")
    locked = sign_in(second, "admin@library.example.org")
    assert locked.status_code == 401
    assert wrong.text.count("role=\"alert\"") == locked.text.count("role=\"alert\"") == 1
    assert second.get("/staff/").status_code == 302
    clock.at = NOW + timedelta(minutes=31)  # well past the lock
    assert sign_in(second, "admin@library.example.org").status_code == 302


@pytest.fixture
def app(app_factory, clock):  # type: ignore[no-untyped-def]
    return app_factory(CLOCK=clock)


def test_the_log_watch_finds_each_kind_of_leak_it_looks_for(ctx):
    issued = ctx.signer.sign(LinkKind.PREFERENCES, "p_0000example")
    WATCH.names.add("Quintanilla")
    logger = logging.getLogger("consent_service.bait")
    with WATCH.deliberate() as bait:
        logger.warning("opened %s", issued)
        logger.warning("key csk_%s used", "A" * 43)
        logger.warning("mail to esperanza.q@example.org")
        logger.warning("patron Quintanilla changed")
        logger.warning("mail 3 (guardian_notice) sent, provider id <outbox-3.1780315200@example.org>")
        logger.warning("SendGrid batch 7 stored: 2 event(s)")
    found = [leak.what for leak in WATCH.leaks(bait)]
    assert found == ["a signed link", "an API key", "an email address",
                     "a patron's name (Quintanilla)"]


def test_a_representative_run_logs_what_happened_and_no_link_address_or_name(
        app, client, session, ctx, make_patron, runner, request):
    """Patron pages, email me a link, a refused webhook, the outbox and a staff search: the logs
    of all that are scanned here (and again with the whole run's at the end)."""
    patron = make_patron(card="21009999", email="esperanza.q@example.org",
                         first_name="Esperanza", last_name="Quintanilla")
    token = link_token(ctx, LinkKind.UNSUBSCRIBE, patron)
    assert client.post(f"/unsubscribe/{token}",
                       data={"List-Unsubscribe": "One-Click"}).status_code == 200
    prefs = link_token(ctx, LinkKind.PREFERENCES, patron)
    assert client.get(f"/preferences/{prefs}").status_code == 200
    assert client.get(f"/preferences/{prefs[:-3]}xyz").status_code in (400, 404)
    page = client.get("/preferences")
    assert client.post("/preferences", data={"csrf_token": csrf_token(page.text),
                                             "email": "esperanza.q@example.org"}).status_code == 200
    assert client.post("/webhooks/sendgrid", data=b"[]",
                       content_type="application/json").status_code in (403, 503)
    signed_in(client, session, "staff")
    assert client.get("/staff/patrons?q=Quintanilla").status_code == 200
    assert runner.invoke(args=["worker", "--once"]).exit_code == 0

    mine = [line for line in WATCH.lines if line[0] == request.node.nodeid]
    assert mine, "the run logged nothing: the watch is not installed"
    assert not WATCH.leaks(mine)


def test_a_session_cookie_copied_before_signing_out_gets_the_sign_in_page_after_it(
        app, client, session):
    """The session is a signed cookie the browser keeps; signing out ends it server-side (the
    account's session epoch moves on), so a copy taken before signing out opens nothing, and a
    form posted with it gets 401, not the page's work."""
    _, token = signed_in(client, session, "admin")
    copied = session_cookie(client)
    thief = app.test_client()
    thief.set_cookie("session", copied)
    assert thief.get("/staff/").status_code == 200  # the copy works while the login lasts

    assert client.post("/staff/logout", data={"csrf_token": token}).status_code == 302
    page = thief.get("/staff/")
    assert page.status_code == 302 and page.headers["Location"].startswith("/staff/login")
    refused = thief.post("/staff/admin/topics", data={"csrf_token": token, "key": "stolen",
                                                      "name": "Stolen"})
    assert refused.status_code == 401
    assert thief.get("/staff/admin/topics").status_code == 302


def test_signing_out_on_one_browser_ends_the_members_sessions_on_every_other(app, session):
    """Two browsers signed in as the same member: both work until one signs out, then neither
    does, and signing in again works (with a new session) while another member stays signed in."""
    make_staff(session, "admin")
    make_staff(session, "staff")
    desk, office, colleague = app.test_client(), app.test_client(), app.test_client()
    for browser in (desk, office):
        assert sign_in(browser, "admin@library.example.org").status_code == 302
    assert sign_in(colleague, "staff@library.example.org").status_code == 302
    assert desk.get("/staff/").status_code == office.get("/staff/").status_code == 200

    token = csrf_token(desk.get("/staff/").text)
    assert desk.post("/staff/logout", data={"csrf_token": token}).status_code == 302
    assert desk.get("/staff/").status_code == office.get("/staff/").status_code == 302
    assert colleague.get("/staff/").status_code == 200  # another member's login is theirs

    assert sign_in(office, "admin@library.example.org").status_code == 302
    assert office.get("/staff/").status_code == 200


def test_a_deactivated_members_sessions_stay_ended_if_the_account_is_made_active_again(
        app, client, session):
    """Deactivation ends the member's sessions for good, not only while the account is inactive
    (no page reactivates an account today; a database edit stands in for one)."""
    _, token = signed_in(client, session, "admin")
    clerk = app.test_client()
    member, _ = signed_in(clerk, session, "staff")
    assert client.post(f"/staff/admin/staff/{member.id}/deactivate",
                       data={"csrf_token": token}).status_code == 302
    session.execute(update(StaffUser).where(StaffUser.id == member.id).values(active=True))
    session.commit()
    assert clerk.get("/staff/").status_code == 302
    assert sign_in(clerk, member.email).status_code == 302  # a new sign-in works
    assert clerk.get("/staff/").status_code == 200
