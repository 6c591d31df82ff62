"""Every API route against no key, a revoked key, a key without the scope and one with it; CSRF
stays on, and a JSON write with a key needs no CSRF token."""

from __future__ import annotations

import pytest

from tests.integration.api.helpers import bearer, decision_body

CARD = "21000000001"
# (method, path, JSON body, the scope it needs, the status a key with the scope gets)
ROUTES = [
    ("PUT", f"/api/v1/patrons/{CARD}", {"first_name": "Ana"}, "patrons:write", 200),
    ("POST", "/api/v1/patrons:batch", {"patrons": [{"card_number": CARD, "last_name": "Ruiz"}]},
     "patrons:write", 200),
    ("GET", f"/api/v1/patrons/{CARD}/decisions", None, "consents:read", 200),
    ("GET", "/api/v1/patrons/by-id/{patron_id}/decisions", None, "consents:read", 200),
    ("POST", "/api/v1/decisions", decision_body(CARD), "consents:write", 201),
    ("GET", f"/api/v1/eligibility?card_number={CARD}&purpose=email_marketing", None,
     "consents:read", 200),
    ("GET", "/api/v1/events", None, "consents:read", 200),
    ("GET", "/api/v1/exports/contacts?purpose=postal_marketing", None, "exports:read", 200),
    ("POST", f"/api/v1/patrons/{CARD}/erasure", {}, "patrons:erase", 200),
]
SCOPES = ("patrons:write", "consents:read", "consents:write", "exports:read", "patrons:erase")


@pytest.fixture
def patron(make_patron):  # type: ignore[no-untyped-def]
    return make_patron(card=CARD, email="ana@example.org")


def call(client, route, patron, key=None):  # type: ignore[no-untyped-def]
    method, path, body, _, _ = route
    headers = bearer(key) if key else {}
    return client.open(path.format(patron_id=patron.public_id), method=method, json=body,
                       headers=headers)


def test_every_api_route_is_in_the_matrix(app):
    routes = {(method, rule.rule) for rule in app.url_map.iter_rules()
              if rule.endpoint.startswith("api.") for method in rule.methods - {"HEAD", "OPTIONS"}}
    listed = {(method, path.split("?")[0].replace(CARD, "<string:card_number>")
               .replace("{patron_id}", "<string:patron_id>")) for method, path, *_ in ROUTES}
    assert routes == listed


@pytest.mark.parametrize("route", ROUTES, ids=[f"{r[0]} {r[1]}" for r in ROUTES])
def test_without_a_key_the_answer_is_401_with_a_bearer_challenge(client, patron, route):
    response = call(client, route, patron)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer realm=")
    assert response.json == {"code": 401, "status": "Unauthorized",
                             "message": "send an API key as `Authorization: Bearer KEY`"}


@pytest.mark.parametrize("route", ROUTES, ids=[f"{r[0]} {r[1]}" for r in ROUTES])
def test_an_unknown_key_gets_401(client, patron, route):
    response = call(client, route, patron, key="csk_not-a-key-we-made")
    assert response.status_code == 401
    assert "invalid_token" in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize("route", ROUTES, ids=[f"{r[0]} {r[1]}" for r in ROUTES])
def test_a_revoked_key_gets_401(client, runner, make_key, patron, route):
    key = make_key(*SCOPES, name="old")
    runner.invoke(args=["apikeys", "revoke", "old"])
    response = call(client, route, patron, key)
    assert response.status_code == 401
    assert response.json["message"] == "the API key is unknown or revoked"


@pytest.mark.parametrize("route", ROUTES, ids=[f"{r[0]} {r[1]}" for r in ROUTES])
def test_a_key_without_the_scope_gets_403(client, make_key, patron, route):
    key = make_key(*(scope for scope in SCOPES if scope != route[3]))
    response = call(client, route, patron, key)
    assert response.status_code == 403
    assert response.json == {"code": 403, "status": "Forbidden",
                             "message": f"this API key does not have the scope {route[3]}"}


@pytest.mark.parametrize("route", ROUTES, ids=[f"{r[0]} {r[1]}" for r in ROUTES])
def test_a_key_with_only_the_scope_gets_through(client, make_key, patron, route):
    response = call(client, route, patron, make_key(route[3]))
    assert response.status_code == route[4], response.get_data(as_text=True)


def test_csrf_protection_is_on_for_the_pages_and_the_api_needs_no_token(app, client, key,
                                                                        patron):
    assert app.config.get("WTF_CSRF_ENABLED", True) is True
    assert client.post("/preferences", data={"email": "ana@example.org"}).status_code == 400
    response = client.post("/api/v1/decisions", json=decision_body(CARD), headers=bearer(key))
    assert response.status_code == 201, response.get_data(as_text=True)
