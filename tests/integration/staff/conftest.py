"""Fixtures of the staff tests: an app on a clock a test can move."""

from __future__ import annotations

import pytest
from flask import Flask


@pytest.fixture
def app(app_factory, clock) -> Flask:  # type: ignore[no-untyped-def]
    return app_factory(CLOCK=clock)
