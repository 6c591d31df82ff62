"""Fixtures and builders for the SendGrid tests: the fake API, the signer, and event batches shaped
as SendGrid sends them. Test modules import the fixtures they use by name."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.models import Patron, Topic
from consent_service.sendgrid.client import SendGridApi
from consent_service.sendgrid.suppressions import SuppressionClient
from consent_service.services.context import ServiceContext
from consent_service.services.decisions import DecisionRequest, record_decision
from tests.conftest import NOW
from tests.fakes.sendgrid_api import FakeSendGrid, WebhookSigner

API_KEY = "test-key"
EVENTS_GROUP = 101  # the "events" topic's unsubscribe group
NEWS_GROUP = 102  # the "news" topic's unsubscribe group
UNMAPPED_GROUP = 999  # a group no topic is mapped to


@pytest.fixture
def fake_sendgrid() -> Iterator[FakeSendGrid]:
    """A running fake SendGrid whose clock reads NOW; the test fails on any call the real API would
    reject (a test that provokes one on purpose takes it with `take_violations()`)."""
    with FakeSendGrid(api_key=API_KEY) as fake:
        fake.clock = NOW.timestamp
        fake.add_group(EVENTS_GROUP, "Events")
        fake.add_group(NEWS_GROUP, "Library news")
        fake.add_group(UNMAPPED_GROUP, "Overdue notices")
        yield fake
        assert fake.violations == []


@pytest.fixture
def suppression_client(fake_sendgrid: FakeSendGrid) -> SuppressionClient:
    """The production client pointed at the fake; reads never sleep."""
    return SuppressionClient(SendGridApi(API_KEY, fake_sendgrid.url, timeout=5,
                                         read_attempts=3, sleep=lambda seconds: None))


@pytest.fixture(scope="session")
def signer() -> WebhookSigner:
    """The account's webhook key pair (SendGrid keeps the private half)."""
    return WebhookSigner()


@pytest.fixture
def app(app_factory: Callable[..., Flask], fake_sendgrid: FakeSendGrid,
        signer: WebhookSigner) -> Flask:
    """Overrides the shared `app`: the signer's public key configured, SendGrid pointed at the fake,
    the clock fixed at NOW. CSRF stays on, as in production."""
    return app_factory(SENDGRID_WEBHOOK_PUBLIC_KEY=signer.public_key_base64, CLOCK=lambda: NOW,
                       SENDGRID_API_KEY=API_KEY, SENDGRID_API_HOST=fake_sendgrid.url)


@pytest.fixture
def topics(session: Session) -> dict[str, int]:
    """Two topics mapped to SendGrid groups."""
    mapped = {"events": EVENTS_GROUP, "news": NEWS_GROUP}
    for key, group in mapped.items():
        session.add(Topic(key=key, name=key.title(), sendgrid_group_id=group, created_at=NOW))
    session.commit()
    return mapped


def sendgrid_event(name: str, email: str, at: datetime, *, milliseconds: bool = False,
                   **fields: Any) -> dict[str, Any]:
    """One event as the Event Webhook sends it: the docs' fields, custom args at the top level,
    `sg_event_id` / `sg_message_id` only when given (both may be missing)."""
    stamp = int(at.timestamp() * 1000) if milliseconds else int(at.timestamp())
    event: dict[str, Any] = {"email": email, "timestamp": stamp, "event": name,
                             "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
                             "category": ["library"]}
    event.update(fields)
    return event


def batch_bytes(events: list[dict[str, Any]]) -> bytes:
    """A batch serialised as SendGrid does: compact JSON, one array."""
    return json.dumps(events, separators=(",", ":")).encode("utf-8")


def post_batch(client: FlaskClient, signer: WebhookSigner, body: bytes | list[dict[str, Any]], *,
               signed_at: datetime = NOW, headers: dict[str, str] | None = None) -> Any:
    """POST a batch signed at `signed_at`, as SendGrid does (no cookies, no CSRF token)."""
    payload = batch_bytes(body) if isinstance(body, list) else body
    sent = signer.headers(payload, str(int(signed_at.timestamp())))
    sent.update(headers or {})
    return client.post("/webhooks/sendgrid", data=payload, headers=sent,
                       content_type="application/json")


def decide(session: Session, ctx: ServiceContext, *, patron: Patron | None = None,
           email: str | None = None, decision: str, topic: str | None = None,
           at: datetime = NOW - timedelta(hours=1), recorded_at: datetime = NOW) -> None:
    """A decision made on our own pages (the preference center), committed."""
    record_decision(session, ctx, DecisionRequest(
        purpose="email_marketing", topic=topic, decision=Decision(decision),
        source=Source.PREFERENCE_CENTER, actor=Actor.PATRON, occurred_at=at, patron=patron,
        email=email), now=recorded_at)
    session.commit()


def count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0
