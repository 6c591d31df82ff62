"""Fixtures of the staff tests: an app on a clock a test can move."""

from __future__ import annotations

import pytest
from flask import Flask

from tests.conftest import NOW
from tests.integration.guardians.helpers import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def app(app_factory, clock) -> Flask:  # type: ignore[no-untyped-def]
    return app_factory(CLOCK=clock)
