"""The authorisation matrix: every staff route against anonymous, admin, staff and marketing.
Anonymous: a GET goes to the sign-in page, a POST gets 401; a role without the permission: 403;
with it: the route's own answer. CSRF stays on: every POST carries the session's token."""

from __future__ import annotations

import pytest

from consent_service.domain.staff import PERMISSIONS, Role
from tests.integration.staff.desk import anonymous_token, arrange_world, signed_in
from tests.integration.staff.routes import COVERED_BLUEPRINTS, STAFF_ROUTES, StaffRoute

WHO = ["anonymous", *(role.value for role in Role)]


def expected(route: StaffRoute, who: str) -> int:
    if who == "anonymous":
        return 302 if route.method == "GET" else 401
    return route.allowed if route.permission in PERMISSIONS[Role(who)] else 403


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("route", STAFF_ROUTES, ids=str)
def test_each_staff_route_answers_each_role_as_the_matrix_says(client, session, make_patron,
                                                               route, who):
    world = arrange_world(session, make_patron)
    token = anonymous_token(client) if who == "anonymous" else signed_in(client, session, who)[1]
    path = world.fill(route.path)
    if route.method == "GET":
        response = client.get(path)
    else:
        response = client.post(path, data={"csrf_token": token, **route.data})

    assert response.status_code == expected(route, who), response.text[:2000]
    if who == "anonymous" and route.method == "GET":
        assert response.location.startswith("/staff/login?next=")
    assert response.headers["Cache-Control"] == "no-store"


def test_the_matrix_lists_every_route_of_the_staff_blueprints(app):
    listed = {(route.method, route.path.split("?")[0]) for route in STAFF_ROUTES}
    placeholders = {"<public_id>": "{patron}", "<int:task_id>": "{task}",
                    "<int:account_id>": "{account}", "<prefix>": "{key}",
                    "<int:request_id>": "{erasure}",
                    "<int:export_id>": "{export}"}
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] not in COVERED_BLUEPRINTS:
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            path = rule.rule
            for name, value in placeholders.items():
                path = path.replace(name, value)
            found = {(m, p.replace("{child}", "{patron}")) for m, p in listed}
            assert (method, path) in found, f"{method} {rule.rule} is not in STAFF_ROUTES"


def test_a_staff_form_without_its_csrf_token_is_refused_and_changes_nothing(client, session,
                                                                            make_patron):
    world = arrange_world(session, make_patron)
    signed_in(client, session, "staff")
    response = client.post(world.fill("/staff/patrons/{patron}/decisions"),
                           data=dict(STAFF_ROUTES[2].data))
    assert response.status_code == 400
    assert "This form has expired" in response.text
    from tests.integration.staff.desk import ledger
    assert ledger(session) == []
