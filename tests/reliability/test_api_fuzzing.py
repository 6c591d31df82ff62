"""API fuzzing: schemathesis reads /api/v1/openapi.json from the app itself and sends every operation
generated requests, valid (positive) and invalid (negative), with a key that holds every scope. No
answer may be a 5xx, and every answer must match what the document promises for it (status, content
type, headers, body schema). Operations are listed from the document at collection, so an
operation added later is fuzzed without touching this file. Traffic stays in the process (WSGI).

schemathesis's own pytest plugin does not run on pytest 9 (it reads a private attribute pytest
dropped), so the test drives its Python API: the operation's hypothesis strategy, one `given`."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from consent_service import create_app
from consent_service.extensions import db
from consent_service.models import Patron
from consent_service.runtime import context
from consent_service.services.api_keys import Scope, create_api_key
from tests.conftest import NOW

# Examples per operation and mode: the suite stays around a minute on two shared cores.
# CONSENT_FUZZ_EXAMPLES raises it for a deeper run on a quiet machine.
EXAMPLES = int(os.environ.get("CONSENT_FUZZ_EXAMPLES", "25"))
ALL_SCOPES = tuple(scope.value for scope in Scope)
CARD = "21000000001"
OPENAPI = "/api/v1/openapi.json"
# Every check schemathesis has, but one: "a schema-valid request is accepted". The API refuses with
# a documented 422 what the rules refuse and a schema cannot say (control characters in a name, an
# empty card number, a card number *or* a patron id, an unknown topic), so that check would fail on
# the API's own rules. Negative data must still be refused, and every answer must match the schema.
EXCLUDED_CHECKS = [positive_data_acceptance]


def documented_operations() -> list[str]:
    """Every operation of the OpenAPI document, as `METHOD /path` (read from an app made here)."""
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": "sqlite://",
                      "SECRET_KEY": "collection-only", "MAIL_BACKEND": "memory"})
    schema = schemathesis.openapi.from_wsgi(OPENAPI, app)
    return [result.ok().label for result in schema.get_all_operations()]


OPERATIONS = documented_operations()


@pytest.fixture
def fuzzed_app(app_factory, clock) -> Iterator[tuple[Flask, str]]:  # type: ignore[no-untyped-def]
    """The app on the test clock, one patron whose card number the examples may hit, and a key
    holding every scope. No application context stays open: each request gets its own."""
    app = app_factory(CLOCK=clock)
    with app.app_context():
        address = "fuzz.target@example.org"
        db.session.add(Patron(card_number=CARD, first_name="Fuzz", last_name="Target",
                              email=address, address_key=context(app).address_key(address),
                              created_at=NOW, updated_at=NOW))
        db.session.commit()
        _, key = create_api_key(db.session, "fuzzer", ALL_SCOPES, now=NOW)
    yield app, key


def test_the_document_lists_every_api_route(app):
    """The fuzzer reaches only what the document lists: every /api/v1 route must be in it."""
    routes = {f"{method} {rule.rule}".replace("<string:", "{").replace(">", "}")
              for rule in app.url_map.iter_rules() if rule.endpoint.startswith("api.")
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routes == set(OPERATIONS)


@pytest.mark.parametrize("mode", list(GenerationMode), ids=str)
@pytest.mark.parametrize("label", OPERATIONS)
def test_no_api_operation_answers_5xx_or_outside_its_documented_schema(fuzzed_app, label, mode):
    app, key = fuzzed_app
    schema = schemathesis.openapi.from_wsgi(OPENAPI, app)
    method, path = label.split(" ", 1)
    operation = schema[path][method]
    statuses: Counter[int] = Counter()

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def fuzz(case: Any) -> None:
        response = case.call_and_validate(headers={"Authorization": f"Bearer {key}"},
                                          excluded_checks=EXCLUDED_CHECKS)
        statuses[response.status_code] += 1

    fuzz()
    assert not [code for code in statuses if code >= 500]
    print(f"\nfuzzed {label} ({mode}): {sum(statuses.values())} requests, "
          f"statuses {dict(sorted(statuses.items()))}")
