"""Settings: embedded defaults (SQLite, mail as files), `CONSENT_*` environment variables, safety checks."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from consent_service.domain import ConsentServiceError
from consent_service.domain.guardians import DEMO_VENDORS

DEV_SECRET_KEY = "dev-only-insecure-secret-key"  # noqa: S105 - refused in production
DEV_ADDRESS_HASH_KEY = "dev-only-insecure-address-hash-key"

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
    "MAIL_DISPATCH": ("MAIL_DISPATCH", str),
    "MAIL_MAX_ATTEMPTS": ("MAIL_MAX_ATTEMPTS", int),
    "LIBRARY_NAME": ("LIBRARY_NAME", str),
    "LIBRARY_POSTAL_ADDRESS": ("LIBRARY_POSTAL_ADDRESS", str),
    "SENDGRID_API_KEY": ("SENDGRID_API_KEY", str),
    "SENDGRID_API_HOST": ("SENDGRID_API_HOST", str),
    "SENDGRID_WEBHOOK_PUBLIC_KEY": ("SENDGRID_WEBHOOK_PUBLIC_KEY", str),
    "SENDGRID_WEBHOOK_MAX_AGE": ("SENDGRID_WEBHOOK_MAX_AGE", int),
    "SENDGRID_WEBHOOK_VERIFY": ("SENDGRID_WEBHOOK_VERIFY", lambda v: _switched_on(v)),
    "SENDGRID_WEBHOOK_MAX_BYTES": ("SENDGRID_WEBHOOK_MAX_BYTES", int),
    "SENDGRID_API_TIMEOUT": ("SENDGRID_API_TIMEOUT", int),
    "PURPOSE_BASIS": ("PURPOSE_BASIS", str),
    "LINK_DAYS_UNSUBSCRIBE": ("LINK_DAYS_UNSUBSCRIBE", int),
    "LINK_DAYS_PREFERENCES": ("LINK_DAYS_PREFERENCES", int),
    "LINK_DAYS_GUARDIAN": ("LINK_DAYS_GUARDIAN", int),
    "LINK_DAYS_FAMILY": ("LINK_DAYS_FAMILY", int),
    "RATELIMIT_STORAGE_URI": ("RATELIMIT_STORAGE_URI", str),
    "GUARDIAN_RESPONSE_DAYS": ("GUARDIAN_RESPONSE_DAYS", int),
    "GUARDIAN_VENDOR_METHOD": ("GUARDIAN_VENDOR_METHOD", str),
    "VENDORS": ("VENDORS", str),
    "POLICY_URL": ("POLICY_URL", str),
}


class UnsafeConfigError(ConsentServiceError, click.ClickException):
    """A setting the service must not run with. It is also a click error, so that `flask …`, which
    builds the app before any of our commands runs, prints the one line instead of a traceback."""


def _switched_on(value: str) -> bool:
    """A yes/no setting: only `false`, `0`, `no` or `off` switch it off."""
    return value.strip().lower() not in ("false", "0", "no", "off")


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
        "MAIL_DISPATCH": "inline",
        "MAIL_MAX_ATTEMPTS": 8,
        "LIBRARY_NAME": "Example County Library",
        "LIBRARY_POSTAL_ADDRESS": "Example County Library, 100 Main St, Castle Rock, CO 80104",
        "SENDGRID_API_KEY": "",
        "SENDGRID_API_HOST": "https://api.sendgrid.com",
        "SENDGRID_WEBHOOK_PUBLIC_KEY": "",
        "SENDGRID_WEBHOOK_MAX_AGE": 26 * 3600,
        # Off only for development: then the webhook takes unsigned batches (refused in production).
        "SENDGRID_WEBHOOK_VERIFY": True,
        "SENDGRID_WEBHOOK_MAX_BYTES": 5 * 1024 * 1024,
        "SENDGRID_API_TIMEOUT": 10,
        "PURPOSE_BASIS": "",
        "LINK_DAYS_UNSUBSCRIBE": 400,
        "LINK_DAYS_PREFERENCES": 30,
        "LINK_DAYS_GUARDIAN": 7,
        "LINK_DAYS_FAMILY": 30,
        # public pages: rate limits (a shared store, e.g. redis://, when running several processes)
        "RATELIMIT_STORAGE_URI": "memory://",
        "RATELIMIT_HEADERS_ENABLED": True,
        "PREFERENCE_LINK_LIMIT_PER_CLIENT": "20 per hour",
        "PREFERENCE_LINK_LIMIT_PER_ADDRESS": "3 per hour",
        # CSRF: the token is checked; the referrer is not, because every page sends
        # `Referrer-Policy: no-referrer` (a signed link in the path must not leak), so on https
        # Flask-WTF's strict referrer check would refuse every form.
        "WTF_CSRF_SSL_STRICT": False,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "BABEL_DEFAULT_LOCALE": "en",
        "BABEL_DEFAULT_TIMEZONE": "America/Denver",
        "EXPORT_CHUNK_SIZE": 2000,
        # parents and guardians (see consent_service/services/guardians.py)
        "GUARDIAN_RESPONSE_DAYS": 14,
        "GUARDIAN_VENDOR_METHOD": "separate_tick",
        "VENDORS": DEMO_VENDORS,
        "POLICY_URL": "https://library.example.org/privacy",
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
    if not config.get("SENDGRID_WEBHOOK_VERIFY", True):
        raise UnsafeConfigError(
            "refusing to start in production: CONSENT_SENDGRID_WEBHOOK_VERIFY=false would accept "
            "forged SendGrid events; set the webhook's public key instead")
    if not config.get("PUBLIC_BASE_URL", "").startswith("https://"):
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
