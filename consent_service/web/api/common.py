"""What every API view shares: the blueprint, API keys and scopes, JSON bodies, Idempotency-Key,
and the service's errors as JSON answers (422 with field errors, 404, 409)."""

from __future__ import annotations

import functools
import http
from collections.abc import Callable
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

from flask import current_app, g, jsonify, request
from flask.typing import ResponseReturnValue
from flask.wrappers import Response
from flask_smorest import Blueprint
from marshmallow import RAISE, Schema
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import BadRequest, HTTPException, Unauthorized, default_exceptions

from consent_service import runtime
from consent_service.domain import ConsentServiceError
from consent_service.domain.ledger import InvalidEventError
from consent_service.domain.purposes import UnknownPurposeError
from consent_service.domain.text import UnsafeTextError
from consent_service.extensions import csrf, db
from consent_service.services.api_idempotency import (
    KEY_LENGTH,
    Answer,
    Claim,
    ConcurrentWriteError,
    IdempotencyKeyReusedError,
    fingerprint,
    run_once,
)
from consent_service.services.api_keys import ApiClient, Scope, UnknownApiKeyError, authenticate
from consent_service.services.api_ledger import InvalidCursorError
from consent_service.services.api_patrons import GENERAL, PatronRecordsError
from consent_service.services.decisions import UnknownTopicError
from consent_service.services.patrons import PatronNotFoundError
from consent_service.services.write_turn import read_without_transaction
from consent_service.web.errors import handle_http_error

blp = Blueprint("api", __name__, url_prefix="/api/v1",
                description="Patron records, decisions, eligibility, the ledger feed, exports.")
csrf.exempt(blp)  # requests carry an API key, never a cookie: there is no session to forge

REALM = "consent-service"
IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_PARAMETER = {
    "in": "header", "name": IDEMPOTENCY_HEADER, "required": False,
    "schema": {"type": "string", "maxLength": KEY_LENGTH},
    "description": "Makes a retry safe: the first response is kept for 24 hours (a setting) and "
                   "answered again, with `Idempotent-Replayed: true`, to a retry with the same "
                   "key and the same request. The same key with a different request gets 422.",
}
WRITE_METHODS = ("POST", "PUT", "PATCH")
# Which request field a service error is about, for the 422 answer's field errors.
_FIELD_OF: dict[type[ConsentServiceError], str] = {
    UnknownPurposeError: "purpose",
    UnknownTopicError: "topic",
    InvalidEventError: "occurred_at",
    InvalidCursorError: "after",
}

View = TypeVar("View", bound=Callable[..., ResponseReturnValue])


@blp.before_request
def _limit_body() -> None:
    """A body over CONSENT_API_MAX_BYTES is refused (413) before it is read."""
    request.max_content_length = current_app.config["API_MAX_BYTES"]


def query_arguments(schema: type[Schema]) -> Callable[[View], View]:
    """A GET view's query parameters, read with `schema`. An unknown parameter is refused (422)
    rather than ignored, as webargs does for the query by default: a misspelt `topc=events` on an
    export would otherwise hand over every patron who may get any library email."""
    # an instance, made once: given the class, webargs would make one for every request
    return blp.arguments(schema(), location="query", unknown=RAISE)  # type: ignore[no-any-return]


def _status_name(code: int) -> str:
    return http.HTTPStatus(code).name


def scope_required(scope: Scope, *, reads_only: bool = False) -> Callable[[View], View]:
    """An API view: a key that is known, not revoked and has `scope` (else 401, or 403), and a
    write's body as JSON (else 415, or 400 for JSON that does not parse). `reads_only`: the view
    writes nothing, so on PostgreSQL its statements run without a transaction
    (`read_without_transaction`; the key's last use, once a minute, is one statement committed
    by itself)."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> ResponseReturnValue:
            if reads_only:
                read_without_transaction(db.session)
            client = _client()
            if not client.may(scope):
                _abort(403, f"this API key does not have the scope {scope.value}")
            g.api_client = client
            if request.method in WRITE_METHODS:
                _require_json_body()
            return view(*args, **kwargs)

        documented = blp.doc(**{"x-required-scope": scope.value})(wrapped)
        for code in (401, 403):
            documented = blp.alt_response(code, response=_status_name(code))(documented)
        return documented  # type: ignore[return-value]

    return decorate


def writes(view: View) -> View:
    """Document a write's common answers and its Idempotency-Key header."""
    documented = blp.doc(parameters=[IDEMPOTENCY_PARAMETER])(view)
    for code in (400, 409, 413, 415):
        documented = blp.alt_response(code, response=_status_name(code))(documented)
    return documented  # type: ignore[return-value]


def _client() -> ApiClient:
    scheme, _, key = request.headers.get("Authorization", "").strip().partition(" ")
    bearer = key.strip() if scheme.lower() == "bearer" else None
    try:
        return authenticate(db.session, bearer, now=runtime.now())
    except UnknownApiKeyError as exc:
        _abort(401, str(exc), www_authenticate=_challenge(error="invalid_token") if bearer
               else _challenge())


def _challenge(**parameters: str) -> WWWAuthenticate:
    return WWWAuthenticate("Bearer", {"realm": REALM, **parameters})


def _require_json_body() -> None:
    if not request.is_json:
        _abort(415, "send the body as JSON, with `Content-Type: application/json`")
    try:
        request.get_json()  # parsed here first, so that no body reaches the views as a 500
    except BadRequest:
        _abort(400, "the body is not valid JSON")
    except RecursionError:
        _abort(400, "the JSON body is nested too deeply")


def current_client() -> ApiClient:
    client: ApiClient = g.api_client
    return client


def answer_once(work: Callable[[], Answer]) -> Response:
    """Run a write under the request's Idempotency-Key, if it has one (see
    services.api_idempotency), and answer it as JSON: the first answer, or the stored one."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    claim = None
    if key is not None:
        if not 1 <= len(key) <= KEY_LENGTH or not key.isascii() or not key.isprintable():
            _abort(422, "an Idempotency-Key is 1 to 255 printable ASCII characters",
                   errors={"headers": {IDEMPOTENCY_HEADER: ["1 to 255 printable ASCII characters"]}})
        claim = Claim(current_client().id, key,
                      fingerprint(request.method, request.full_path, request.get_data()))
    lifetime = timedelta(hours=current_app.config["API_IDEMPOTENCY_HOURS"])
    answer = run_once(db.session, claim, work, now=runtime.now(), lifetime=lifetime)
    response = jsonify(answer.body)
    response.status_code = answer.status
    if answer.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _error(code: int, message: str, *, errors: dict[str, Any] | None = None,
           www_authenticate: WWWAuthenticate | None = None) -> HTTPException:
    """The error `code` with `message` (and field errors), for the app's JSON error answer."""
    if www_authenticate is not None:
        error: HTTPException = Unauthorized(message, www_authenticate=www_authenticate)
    else:
        error = default_exceptions[code](message)
    if errors is not None:
        error.data = {"messages": errors}  # type: ignore[attr-defined]
    return error


def _abort(code: int, message: str, *, errors: dict[str, Any] | None = None,
           www_authenticate: WWWAuthenticate | None = None) -> NoReturn:
    raise _error(code, message, errors=errors, www_authenticate=www_authenticate)


def _answer(code: int, message: str, errors: dict[str, Any] | None = None
            ) -> ResponseReturnValue:
    """The JSON error answer, from an error handler (which must answer, not raise)."""
    return handle_http_error(_error(code, message, errors=errors))


def _location() -> str:
    return "query" if request.method == "GET" else "json"


@blp.errorhandler(PatronNotFoundError)
def _not_found(error: PatronNotFoundError) -> ResponseReturnValue:
    return _answer(404, str(error))


@blp.errorhandler(PatronRecordsError)
def _records_refused(error: PatronRecordsError) -> ResponseReturnValue:
    """A batch's problems by record index; one record's by field (the card number is the path's)."""
    if request.method != "PUT":
        return _answer(422, f"{len(error.problems)} patron record(s) were refused; nothing was "
                            "written", {"json": {"patrons": error.problems}})
    problems = dict(error.problems.get(0, {}))
    card = problems.pop("card_number", None)
    return _answer(422, "the patron record was refused",
                   {**({"json": problems} if problems else {}),
                    **({"path": {"card_number": card}} if card else {})})


@blp.errorhandler(IdempotencyKeyReusedError)
def _key_reused(error: IdempotencyKeyReusedError) -> ResponseReturnValue:
    return _answer(422, str(error), {"headers": {IDEMPOTENCY_HEADER: [str(error)]}})


@blp.errorhandler(ConcurrentWriteError)
def _collided(error: ConcurrentWriteError) -> ResponseReturnValue:
    return _answer(409, str(error))


@blp.errorhandler(ConsentServiceError)
def _refused(error: ConsentServiceError) -> ResponseReturnValue:
    """Any other refusal by a rule: 422, with the field it is about."""
    field = next((name for kind, name in _FIELD_OF.items() if isinstance(error, kind)), None)
    if field is None and isinstance(error, UnsafeTextError):
        field = str(error).split(" ", 1)[0]
    return _answer(422, str(error), {_location(): {field or GENERAL: [str(error)]}})
