"""Builds the services' collaborators from the application's settings, once per application."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Flask, current_app

from consent_service.domain.guardians import GuardianSettings
from consent_service.domain.purposes import Catalog, parse_basis_overrides
from consent_service.domain.tokens import LinkKind, LinkSigner
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
