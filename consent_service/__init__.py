"""Consent Service: the library's system of record for what each patron has agreed to."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from consent_service import config as settings
from consent_service.extensions import db, migrate


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the application: settings, extensions, blueprints, error pages and commands."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(settings.load(app.instance_path, test_config))
    os.makedirs(app.instance_path, exist_ok=True)
    register_extensions(app)
    register_blueprints(app)
    register_commands(app)
    return app


def register_extensions(app: Flask) -> None:
    from consent_service import models  # noqa: F401 - the tables must be known to migrations

    db.init_app(app)
    migrate.init_app(app, db, directory=os.path.join(os.path.dirname(app.root_path), "migrations"))


def register_blueprints(app: Flask) -> None:
    from consent_service.web import health

    app.register_blueprint(health.bp)


def register_commands(app: Flask) -> None:
    from consent_service import cli

    cli.register(app)
