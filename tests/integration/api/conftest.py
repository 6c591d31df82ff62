"""Fixtures of the API tests: an app on a clock a test can move, and API keys."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from consent_service.services.api_keys import Scope, create_api_key
from tests.conftest import NOW

ALL_SCOPES = tuple(scope.value for scope in Scope)


@pytest.fixture
def app(app_factory, clock) -> Flask:  # type: ignore[no-untyped-def]
    return app_factory(CLOCK=clock)


@pytest.fixture
def make_key(session: Session) -> Callable[..., str]:
    """Create an API key with these scopes (all of them by default); the key itself."""
    counter = iter(range(1, 1000))

    def make(*scopes: str, name: str | None = None) -> str:
        _, key = create_api_key(session, name or f"system {next(counter)}", scopes or ALL_SCOPES,
                                now=NOW)
        return key

    return make


@pytest.fixture
def key(make_key: Callable[..., str]) -> str:
    return make_key()
