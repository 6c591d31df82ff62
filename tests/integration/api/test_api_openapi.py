"""The OpenAPI 3 document at /api/v1/openapi.json: valid, and describing every route as it works."""

from __future__ import annotations

from openapi_spec_validator import validate

from tests.integration.api.test_api_authorisation import ROUTES


def document(client):  # type: ignore[no-untyped-def]
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.json


def test_the_document_is_valid_openapi_3_and_needs_no_key(client):
    spec = document(client)
    assert spec["openapi"].startswith("3.")
    validate(spec)  # raises, naming the problem, when it is not


def test_every_route_is_documented_with_its_scope_summary_and_errors(client):
    spec = document(client)
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer",
        "description": "An API key made by `flask apikeys create`."}
    assert spec["security"] == [{"bearerAuth": []}]
    documented = {(method.upper(), path) for path, item in spec["paths"].items()
                  for method in item if method != "parameters"}
    expected = {(method, path.split("?")[0].replace("21000000001", "{card_number}"))
                for method, path, *_ in ROUTES}
    assert documented == expected
    for method, path, _, scope, status in ROUTES:
        operation = spec["paths"][path.split("?")[0].replace("21000000001", "{card_number}")][
            method.lower()]
        assert operation["x-required-scope"] == scope
        assert operation["summary"] and operation["description"]
        assert {str(status), "401", "403"} <= set(operation["responses"]), path


def test_writes_document_the_idempotency_key(client):
    spec = document(client)
    for path, method in (("/api/v1/decisions", "post"), ("/api/v1/patrons:batch", "post"),
                         ("/api/v1/patrons/{card_number}", "put")):
        names = [p["name"] for p in spec["paths"][path][method].get("parameters", [])]
        assert "Idempotency-Key" in names, path

