"""Fixtures of the guardian tests: an app on a clock a test can move, email topics, a child and
a guardian patron."""

from __future__ import annotations

from datetime import date

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from consent_service.models import Topic
from tests.conftest import NOW
from tests.integration.guardians.helpers import CHILD_BORN


@pytest.fixture
def app(app_factory, clock) -> Flask:  # type: ignore[no-untyped-def]
    return app_factory(CLOCK=clock)


@pytest.fixture
def topics(session: Session) -> list[str]:
    for key, name in (("events", "Library events"), ("kids_teens", "Kids & teens")):
        session.add(Topic(key=key, name=name, created_at=NOW))
    session.commit()
    return ["events", "kids_teens"]


@pytest.fixture
def id_check_app(app_factory, clock) -> Flask:  # type: ignore[no-untyped-def]
    """An app where vendor sharing for a child needs an ID check. Use it without the `session`
    fixture: a CLI runner inside another app's context runs its commands on that app."""
    return app_factory(CLOCK=clock, GUARDIAN_VENDOR_METHOD="id_check")


@pytest.fixture
def maya(make_patron):  # type: ignore[no-untyped-def]
    return make_patron(card="K0001", first_name="Maya", email="maya.kid@example.org",
                       birth_date=CHILD_BORN)


@pytest.fixture
def pat(make_patron):  # type: ignore[no-untyped-def]
    return make_patron(card="G0001", first_name="Pat", email="pat@example.org",
                       birth_date=date(1985, 1, 1))
