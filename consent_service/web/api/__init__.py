"""The REST API at /api/v1 (flask-smorest): other systems, with API keys and scopes; its OpenAPI 3
document at /api/v1/openapi.json is built from the views' schemas and docstrings."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

DESCRIPTION = (
    "For the library's ILS and other systems. Send an API key as `Authorization: Bearer KEY` "
    "(`flask apikeys create NAME --scope S`); each operation needs the scope named in its "
    "`x-required-scope`. Errors are JSON `{code, status, message}`, with `errors` by location "
    "and field for bad input (422). Writes accept an `Idempotency-Key` header."
)


class ConsentApi(Api):  # type: ignore[misc]
    """flask-smorest's Api without its application-wide error handler: `web/errors.py` answers
    every error, as JSON under /api and as an HTML page everywhere else (flask-smorest's handler
    would answer the patrons' and staff's pages with JSON)."""

    def _register_error_handlers(self) -> None:
        return None


def init_app(app: Flask) -> None:
    """Serve the API and its OpenAPI document on `app`."""
    from consent_service.web.api import ledger, patrons  # noqa: F401 - their views join `blp`
    from consent_service.web.api.common import blp

    app.config.setdefault("API_TITLE", "Consent Service API")
    app.config.setdefault("API_VERSION", "v1")
    app.config.setdefault("OPENAPI_VERSION", "3.0.3")
    app.config.setdefault("OPENAPI_URL_PREFIX", "/api/v1")
    app.config.setdefault("OPENAPI_JSON_PATH", "openapi.json")
    app.config.setdefault("API_SPEC_OPTIONS", {
        "info": {"description": DESCRIPTION},
        "security": [{"bearerAuth": []}],
        "components": {"securitySchemes": {"bearerAuth": {
            "type": "http", "scheme": "bearer",
            "description": "An API key made by `flask apikeys create`."}}},
    })
    api = ConsentApi(app)
    api.register_blueprint(blp)

