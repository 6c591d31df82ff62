"""The composition root: builds the services' collaborators and the adapters (SendGrid's clients,
the webhook verifier) from the application's settings, once per application. Views and commands
get them here, never by importing an adapter."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Flask, current_app

from consent_service.domain.guardians import GuardianSettings
from consent_service.domain.purposes import Catalog, parse_basis_overrides
from consent_service.domain.tokens import LinkKind, LinkSigner
from consent_service.sendgrid.suppressions import SuppressionClient
from consent_service.sendgrid.suppressions import suppression_client as _suppression_client
from consent_service.sendgrid.webhook import WebhookKeyError, WebhookVerifier
from consent_service.services.context import ServiceContext


def context(app: Flask | None = None) -> ServiceContext:
    """The ServiceContext of `app` (default: the current one)."""
    app = app or current_app
    ctx = app.extensions.get("consent_service")
    if ctx is None:
        config = app.config
        signer = LinkSigner(
            [config["SECRET_KEY"], *config["SECRET_KEY_FALLBACKS"]],
            {kind: config[f"LINK_DAYS_{kind.name}"] for kind in LinkKind},
        )
        ctx = ServiceContext(
            catalog=Catalog(parse_basis_overrides(config["PURPOSE_BASIS"])),
            address_secret=config["ADDRESS_HASH_KEY"].encode("utf-8"),
            signer=signer,
            public_base_url=config["PUBLIC_BASE_URL"],
            library_name=config["LIBRARY_NAME"],
            library_postal_address=config["LIBRARY_POSTAL_ADDRESS"],
            mail_from=config["MAIL_FROM"],
            library_email=config["LIBRARY_EMAIL"],
            library_phone=config["LIBRARY_PHONE"],
            jurisdiction=config["JURISDICTION"],
            guardians=GuardianSettings.from_config(config),
        )
        app.extensions["consent_service"] = ctx
    return ctx


def now(app: Flask | None = None) -> datetime:
    """The current instant (aware UTC) for a request or command. Tests fix it with the `CLOCK`
    setting, a callable returning an aware datetime; entry points read the time here, services take
    it as an argument."""
    clock = (app or current_app).config.get("CLOCK")
    return clock() if clock is not None else datetime.now(UTC)


def suppression_client(app: Flask | None = None, *, read_attempts: int = 1) -> SuppressionClient:
    """SendGrid's suppression API for the configured account (see sendgrid.suppressions)."""
    return _suppression_client((app or current_app).config, read_attempts=read_attempts)


def webhook_verifier(app: Flask | None = None) -> WebhookVerifier | None:
    """The Event Webhook's signature verifier for the configured key, built once per key; None
    when verification is switched off (CONSENT_SENDGRID_WEBHOOK_VERIFY).

    :raise WebhookKeyError: verification is on and the key is missing or not a key.
    """
    app = app or current_app
    if not app.config["SENDGRID_WEBHOOK_VERIFY"]:
        return None
    key = app.config["SENDGRID_WEBHOOK_PUBLIC_KEY"] or ""
    cached = app.extensions.get("sendgrid_webhook_verifier")
    if cached is None or cached[0] != key:
        if not key.strip():
            raise WebhookKeyError("CONSENT_SENDGRID_WEBHOOK_PUBLIC_KEY is not set")
        cached = (key, WebhookVerifier(key))
        app.extensions["sendgrid_webhook_verifier"] = cached
    verifier: WebhookVerifier = cached[1]
    return verifier
