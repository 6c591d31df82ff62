"""`flask worker`: one process sends queued mail and pushes suppression changes to SendGrid."""
# ruff: noqa: F811 - pytest fixtures are imported by name and then taken as arguments

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import select

from consent_service.delivery.mailers import mailer_for
from consent_service.models import OutboxMessage, SuppressionSyncJob
from consent_service.services.outgoing_mail import queue_email
from tests.conftest import NOW
from tests.fakes.sendgrid_api import FakeSendGrid
from tests.integration.sendgrid_fixtures import API_KEY, decide, fake_sendgrid  # noqa: F401


@pytest.fixture
def app(app_factory: Callable[..., Flask], fake_sendgrid: FakeSendGrid) -> Flask:
    return app_factory(MAIL_DISPATCH="worker", CLOCK=lambda: NOW, SENDGRID_API_KEY=API_KEY,
                       SENDGRID_API_HOST=fake_sendgrid.url)


def test_one_worker_round_sends_the_mail_and_pushes_the_unsubscribe(app, runner, session, ctx, make_patron,
                                                                    fake_sendgrid):
    patron = make_patron(email="reader@example.org")
    decide(session, ctx, patron=patron, decision="opt_out")
    queue_email(session, ctx, template="preferences_link", to="reader@example.org", language="en",
                context={"links": [{"first_name": "Reader", "url": "https://consent.example.org/x"}]},
                category="transactional", now=NOW, patron=patron)
    session.commit()
    assert mailer_for(app).sent == []  # MAIL_DISPATCH=worker: nothing leaves until the worker runs

    result = runner.invoke(args=["worker", "--once", "--idle-seconds", "0"])

    assert result.exit_code == 0, result.output
    assert [m["To"] for m in mailer_for(app).sent] == ["reader@example.org"]
    assert "reader@example.org" in fake_sendgrid.global_unsubscribes
    session.expire_all()
    assert [j.status for j in session.scalars(select(SuppressionSyncJob))] == ["done"]
    assert [m.status for m in session.scalars(select(OutboxMessage))] == ["sent"]


def test_without_a_sendgrid_key_the_worker_says_changes_stay_queued(app_factory):
    app = app_factory(MAIL_DISPATCH="worker", CLOCK=lambda: NOW)
    with app.app_context():
        result = app.test_cli_runner().invoke(args=["worker", "--once", "--idle-seconds", "0"])
    assert result.exit_code == 0
    assert "CONSENT_SENDGRID_API_KEY is not set: suppression changes stay queued" in result.output
