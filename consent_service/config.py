"""Settings: embedded defaults (SQLite, mail as files), `CONSENT_*` environment variables, safety checks."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from consent_service.domain import ConsentServiceError

DEV_SECRET_KEY = "dev-only-insecure-secret-key"  # noqa: S105 - refused in production
DEV_ADDRESS_HASH_KEY = "dev-only-insecure-address-hash-key"  # noqa: S105 - refused in production

# CONSENT_<NAME> environment variable -> (config key, parser)
_ENVIRONMENT: dict[str, tuple[str, Any]] = {
    "ENV": ("CONSENT_ENV", str),
    "DATABASE_URL": ("SQLALCHEMY_DATABASE_URI", str),
    "SECRET_KEY": ("SECRET_KEY", str),
    "SECRET_KEY_FALLBACKS": ("SECRET_KEY_FALLBACKS", lambda v: [k for k in v.split(",") if k]),
    "ADDRESS_HASH_KEY": ("ADDRESS_HASH_KEY", str),
    "PUBLIC_BASE_URL": ("PUBLIC_BASE_URL", lambda v: v.rstrip("/")),
    "MAIL_BACKEND": ("MAIL_BACKEND", str),
    "MAIL_FILE_DIR": ("MAIL_FILE_DIR", str),
    "MAIL_FROM": ("MAIL_FROM", str),
    "SENDGRID_API_KEY": ("SENDGRID_API_KEY", str),
    "SENDGRID_API_HOST": ("SENDGRID_API_HOST", str),
    "SENDGRID_WEBHOOK_PUBLIC_KEY": ("SENDGRID_WEBHOOK_PUBLIC_KEY", str),
    "SENDGRID_WEBHOOK_MAX_AGE": ("SENDGRID_WEBHOOK_MAX_AGE", int),
    "PURPOSE_BASIS": ("PURPOSE_BASIS", str),
    "LINK_DAYS_UNSUBSCRIBE": ("LINK_DAYS_UNSUBSCRIBE", int),
    "LINK_DAYS_PREFERENCES": ("LINK_DAYS_PREFERENCES", int),
    "LINK_DAYS_GUARDIAN": ("LINK_DAYS_GUARDIAN", int),
    "LINK_DAYS_FAMILY": ("LINK_DAYS_FAMILY", int),
}


class UnsafeConfigError(ConsentServiceError):
    """A production deployment missing a setting it must not run without."""


def defaults(instance_path: str) -> dict[str, Any]:
    """The embedded configuration: works on a laptop with nothing installed but Python."""
    return {
        "CONSENT_ENV": "development",
        "SQLALCHEMY_DATABASE_URI": "sqlite:///" + str(Path(instance_path) / "consent.sqlite3"),
        "SECRET_KEY": DEV_SECRET_KEY,
        "SECRET_KEY_FALLBACKS": [],
        "ADDRESS_HASH_KEY": DEV_ADDRESS_HASH_KEY,
        "PUBLIC_BASE_URL": "http://127.0.0.1:5000",
        "MAIL_BACKEND": "file",
        "MAIL_FILE_DIR": str(Path(instance_path) / "mail"),
        "MAIL_FROM": "Library <library@example.org>",
        "SENDGRID_API_KEY": "",
        "SENDGRID_API_HOST": "https://api.sendgrid.com",
        "SENDGRID_WEBHOOK_PUBLIC_KEY": "",
        "SENDGRID_WEBHOOK_MAX_AGE": 26 * 3600,
        "PURPOSE_BASIS": "",
        "LINK_DAYS_UNSUBSCRIBE": 400,
        "LINK_DAYS_PREFERENCES": 30,
        "LINK_DAYS_GUARDIAN": 7,
        "LINK_DAYS_FAMILY": 30,
        "EXPORT_CHUNK_SIZE": 2000,
    }


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """Read every `CONSENT_*` variable that is set; a malformed number names its variable."""
    settings: dict[str, Any] = {}
    for name, (key, parse) in _ENVIRONMENT.items():
        raw = environ.get("CONSENT_" + name)
        if raw is None or raw == "":
            continue
        try:
            settings[key] = parse(raw)
        except ValueError:
            raise UnsafeConfigError(f"CONSENT_{name} must be a whole number, not {raw!r}") from None
    return settings


def check_production(config: Mapping[str, Any]) -> None:
    """Refuse to run in production with the development secrets or without a public address."""
    if config.get("CONSENT_ENV") != "production":
        return
    secret = config.get("SECRET_KEY") or ""
    if secret == DEV_SECRET_KEY or len(secret) < 32:
        raise UnsafeConfigError(
            "refusing to start in production: set CONSENT_SECRET_KEY to a random value of 32+ characters"
        )
    hash_key = config.get("ADDRESS_HASH_KEY") or ""
    if hash_key == DEV_ADDRESS_HASH_KEY or len(hash_key) < 32:
        raise UnsafeConfigError(
            "refusing to start in production: set CONSENT_ADDRESS_HASH_KEY to a random value of 32+ "
            "characters (and never change it: suppressed addresses are stored under it)"
        )
    if config.get("PUBLIC_BASE_URL", "").startswith("http://127.0.0.1"):
        raise UnsafeConfigError(
            "refusing to start in production: set CONSENT_PUBLIC_BASE_URL to the service's public https URL"
        )


def load(instance_path: str, test_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults, then the environment, then `test_config`; checked for production safety."""
    config = defaults(instance_path)
    config.update(from_environment(os.environ))
    if test_config:
        config.update(test_config)
    check_production(config)
    return config
