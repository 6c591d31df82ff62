"""Error answers: an HTML page with one plain line for people, JSON for the API and webhooks."""

from __future__ import annotations

from typing import Any

from flask import Flask, g, jsonify, render_template, request
from flask.wrappers import Response
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException, InternalServerError, ServiceUnavailable

from consent_service.extensions import db
from consent_service.services.outages import is_database_outage

JSON_PREFIXES = ("/api", "/webhooks")
OUTAGE_RETRY_SECONDS = 30  # Retry-After when the database cannot be used for a moment
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


def wants_json() -> bool:
    """Machines call /api/… and /webhooks/…; everything else is a page for people."""
    return any(request.path == prefix or request.path.startswith(prefix + "/")
               for prefix in JSON_PREFIXES)


def handle_http_error(error: HTTPException) -> tuple[Response | str, int, dict[str, str]]:
    """Answer an HTTP error (an unexpected exception arrives as a 500) without a traceback."""
    code = error.code or 500
    headers = {name: value for name, value in error.get_headers() if name in _KEPT_HEADERS}
    if wants_json():
        # the shape flask-smorest gives its own errors, validation messages included
        payload: dict[str, Any] = {"code": code, "status": error.name}
        payload["message"] = error.description if code < 500 or code == 503 \
            else "internal server error"
        data = getattr(error, "data", None)
        if isinstance(data, dict) and "messages" in data:
            payload["errors"] = data["messages"]
        return jsonify(payload), code, headers
    title, line = _explain(error, code)
    return render_template("errors/error.html", title=title, line=line, code=code), code, headers


def handle_database_error(error: SQLAlchemyError) -> tuple[Response | str, int, dict[str, str]]:
    """A database that cannot be used just now (unreachable, restarting, locked) is a 503 with
    Retry-After: a person is asked to try again in a minute, SendGrid and API clients retry. What
    the request did is rolled back (use cases commit once). Any other database error is a 500."""
    db.session.rollback()
    if not is_database_outage(error):
        return handle_http_error(InternalServerError())
    ask_to_retry_soon()
    return handle_http_error(
        ServiceUnavailable("the database is unavailable for a moment; try again later"))


def ask_to_retry_soon() -> None:
    """Mark this request's answer (a 503: the database cannot be used for a moment) to carry
    `Retry-After: OUTAGE_RETRY_SECONDS`. It is set by `_retry_after`, the app's last after-request
    function, because Flask-Limiter sets Retry-After on every answer of a rate-limited route to the
    end of its window (an hour for "email me a link") and would otherwise send SendGrid and people
    away for that long."""
    g.retry_after_seconds = OUTAGE_RETRY_SECONDS


def _retry_after(response: Response) -> Response:
    seconds = g.get("retry_after_seconds")
    if seconds is not None:
        response.headers["Retry-After"] = str(seconds)
    return response


def _explain(error: HTTPException, code: int) -> tuple[str, str]:
    if isinstance(error, CSRFError):
        return (_("This form has expired"),
                _("For your safety, forms work for a limited time. Go back, reload the page and "
                  "try again."))
    if code == 400:
        return _("Something is wrong with this request"), _("Please go back and try again.")
    if code == 404:
        return _("Page not found"), _("There is no page at this address. Please check the link.")
    if code == 405:
        return (_("This page cannot be used that way"),
                _("Please open the page from its link and use its buttons."))
    if code == 503:
        return (_("We cannot reach our records just now"),
                _("Please try again in a minute."))
    if code == 429:
        return (_("Too many requests"),
                _("You have asked too often in a short time. Please wait an hour and try again."))
    if code >= 500:
        return (_("Something went wrong on our side"),
                _("We could not finish your request. Please try again later."))
    return error.name, _("Please go back and try again.")


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(SQLAlchemyError, handle_database_error)
    # after-request functions run last-registered first: at the front of the list, this one runs
    # after every other (Flask-Limiter's header injection included)
    app.after_request_funcs.setdefault(None, []).insert(0, _retry_after)
