"""Settings: embedded defaults (SQLite, mail as files), `CONSENT_*` environment variables, safety checks."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from consent_service.domain import ConsentServiceError
from consent_service.domain.policies import PolicyError, parse_rate
from consent_service.domain.purposes import PurposeKey

# Two example vendors, so the guardian pages and mail show what a real list looks like.
DEMO_VENDORS = (f"Example Address Services|https://address-services.example/privacy|"
                f"{PurposeKey.CONTACT_UPDATE};"
                f"Example Outreach Analytics|https://outreach-analytics.example/privacy|"
                f"{PurposeKey.THIRD_PARTY_MODELING}")
DEV_SECRET_KEY = "dev-only-insecure-secret-key"  # noqa: S105 - refused in production
DEV_ADDRESS_HASH_KEY = "dev-only-insecure-address-hash-key"
MIN_KEY_LENGTH = 32
ENVIRONMENTS = ("development", "production")
# The rate-limit store in production unless CONSENT_RATELIMIT_STORAGE_URL names another shared one
# (consent_service/ratelimit.py); development counts in memory.
DATABASE_RATELIMIT_STORAGE = "database://"

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
    "RATELIMIT_STORAGE_URI": ("RATELIMIT_STORAGE_URI", str),  # the older spelling, still read
    "RATELIMIT_STORAGE_URL": ("RATELIMIT_STORAGE_URI", str),
    "GUARDIAN_RESPONSE_DAYS": ("GUARDIAN_RESPONSE_DAYS", int),
    "GUARDIAN_VENDOR_METHOD": ("GUARDIAN_VENDOR_METHOD", str),
    "VENDORS": ("VENDORS", str),
    "POLICY_URL": ("POLICY_URL", str),
    "POLICY_NOTICE_RATE": ("POLICY_NOTICE_RATE", str),
    "LIBRARY_EMAIL": ("LIBRARY_EMAIL", str),
    "LIBRARY_PHONE": ("LIBRARY_PHONE", str),
    "JURISDICTION": ("JURISDICTION", str),
    "DATA_DOWNLOAD_LIMIT_PER_CLIENT": ("DATA_DOWNLOAD_LIMIT_PER_CLIENT", str),
    "STAFF_SESSION_HOURS": ("STAFF_SESSION_HOURS", int),
    "STAFF_LOCKOUT_FAILURES": ("STAFF_LOCKOUT_FAILURES", int),
    "STAFF_LOCKOUT_MINUTES": ("STAFF_LOCKOUT_MINUTES", int),
    "API_IDEMPOTENCY_HOURS": ("API_IDEMPOTENCY_HOURS", int),
    "API_MAX_BYTES": ("API_MAX_BYTES", int),
    "RETENTION_WEBHOOK_BODY_DAYS": ("RETENTION_WEBHOOK_BODY_DAYS", int),
    "RETENTION_EVIDENCE_DAYS": ("RETENTION_EVIDENCE_DAYS", int),
    "RETENTION_GUARDIAN_REQUEST_DAYS": ("RETENTION_GUARDIAN_REQUEST_DAYS", int),
    "RETENTION_INACTIVE_PATRON_DAYS": ("RETENTION_INACTIVE_PATRON_DAYS", int),
    "PAGE_MAX_BYTES": ("PAGE_MAX_BYTES", int),
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
        # PostgreSQL's pooled connections are checked before use (consent_service/connection_check.py:
        # without a round trip, unless idle for 30 s), so after a database restart or a dropped
        # connection the first request gets a new connection instead of an error
        "SQLALCHEMY_ENGINE_OPTIONS": {},
        "PURPOSE_BASIS": "",
        "LINK_DAYS_UNSUBSCRIBE": 400,
        "LINK_DAYS_PREFERENCES": 30,
        "LINK_DAYS_GUARDIAN": 7,
        "LINK_DAYS_FAMILY": 30,
        # public pages: rate limits. Unset: memory:// in development, database:// (the service's own
        # database, shared by every process) in production; see `load`.
        "RATELIMIT_STORAGE_URI": "",
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
        # parents and guardians (see consent_service/services/guardians/)
        "GUARDIAN_RESPONSE_DAYS": 14,
        "GUARDIAN_VENDOR_METHOD": "separate_tick",
        "VENDORS": DEMO_VENDORS,
        "POLICY_URL": "https://library.example.org/privacy",
        # how fast the outbox may send a policy-change notice to everyone (see README)
        "POLICY_NOTICE_RATE": "300/minute",
        # the library as the controller named in consent receipts (Kantara CR v1.1 piiControllers)
        "LIBRARY_EMAIL": "privacy@library.example.org",
        "LIBRARY_PHONE": "",
        "JURISDICTION": "US-CO",
        # a patron's data download and consent receipts, per client
        "DATA_DOWNLOAD_LIMIT_PER_CLIENT": "60 per hour",
        # staff pages: a login lasts this long; this many wrong passwords in a row lock the account
        # for this many minutes; login attempts are also rate-limited per client
        "STAFF_SESSION_HOURS": 8,
        "STAFF_LOCKOUT_FAILURES": 5,
        "STAFF_LOCKOUT_MINUTES": 15,
        "STAFF_LOGIN_LIMIT_PER_CLIENT": "20 per 10 minutes",
        # REST API: how long a write's answer is kept for a retry with its Idempotency-Key; the
        # largest request body (a batch of 1000 patrons is well under it)
        "API_IDEMPOTENCY_HOURS": 24,
        "API_MAX_BYTES": 2 * 1024 * 1024,
        # retention (`flask retention purge`; README explains each default; 0 keeps forever):
        # processed webhook bodies, IP and user-agent evidence, unanswered guardian requests past
        # their expiry, inactive patrons' personal data (erased)
        "RETENTION_WEBHOOK_BODY_DAYS": 30,
        "RETENTION_EVIDENCE_DAYS": 365,
        "RETENTION_GUARDIAN_REQUEST_DAYS": 30,
        "RETENTION_INACTIVE_PATRON_DAYS": 3 * 365,
        # the largest request body a page takes (a form, a staff upload such as a photo roster's
        # sign-in sheet); larger is refused with 413 before it is read. The API and the SendGrid
        # webhook have their own limits (above), which they set on each of their requests.
        "PAGE_MAX_BYTES": 1024 * 1024,
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


def check_environment(config: Mapping[str, Any]) -> None:
    """Refuse a `CONSENT_ENV` that is neither `development` nor `production`: a typo must not quietly
    run development mode, with its published keys and no checks."""
    environment = config.get("CONSENT_ENV")
    if environment not in ENVIRONMENTS:
        raise UnsafeConfigError(
            f"CONSENT_ENV must be development or production, not {environment!r}")


def _refuse(reason: str) -> UnsafeConfigError:
    return UnsafeConfigError(f"refusing to start in production: {reason}")


def _check_key(variable: str, value: str, *, note: str = "") -> None:
    """One signing or hashing key: not a development key (published with the source), and long
    enough not to be guessed."""
    if value in (DEV_SECRET_KEY, DEV_ADDRESS_HASH_KEY):
        problem = "a development key, which is published with the source"
    elif len(value) < MIN_KEY_LENGTH:
        problem = f"a key shorter than {MIN_KEY_LENGTH} characters"
    else:
        return
    raise _refuse(f"{variable} holds {problem}; use a random value of {MIN_KEY_LENGTH}+ characters{note}")


def check_production(config: Mapping[str, Any]) -> None:
    """Refuse to run in production with a development or short key (link keys, retired link keys
    and the address hash key), a link key that is also the address hash key, unsigned webhooks, no
    public https address, mail that is never sent, or rate limits counted in each process apart."""
    if config.get("CONSENT_ENV") != "production":
        return
    secret = config.get("SECRET_KEY") or ""
    fallbacks = list(config.get("SECRET_KEY_FALLBACKS") or [])
    hash_key = config.get("ADDRESS_HASH_KEY") or ""
    _check_key("CONSENT_SECRET_KEY", secret)
    for fallback in fallbacks:
        _check_key("CONSENT_SECRET_KEY_FALLBACKS", fallback)
    _check_key("CONSENT_ADDRESS_HASH_KEY", hash_key,
               note=" (and never change it: suppressed addresses are stored under it)")
    if secret == hash_key:
        raise _refuse("CONSENT_SECRET_KEY is the same as CONSENT_ADDRESS_HASH_KEY; each needs its "
                      "own random value")
    if hash_key in fallbacks:
        raise _refuse("CONSENT_SECRET_KEY_FALLBACKS holds CONSENT_ADDRESS_HASH_KEY; link keys and "
                      "the address hash key must differ")
    if not config.get("SENDGRID_WEBHOOK_VERIFY", True):
        raise _refuse("CONSENT_SENDGRID_WEBHOOK_VERIFY=false would accept forged SendGrid events; "
                      "set the webhook's public key instead")
    if not config.get("PUBLIC_BASE_URL", "").startswith("https://"):
        raise _refuse("set CONSENT_PUBLIC_BASE_URL to the service's public https URL")
    if config.get("MAIL_BACKEND") == "memory":
        raise _refuse("CONSENT_MAIL_BACKEND=memory keeps mail in memory and sends none; use sendgrid")
    if urlsplit(config.get("RATELIMIT_STORAGE_URI") or "").scheme == "memory":
        raise _refuse("CONSENT_RATELIMIT_STORAGE_URL=memory:// counts in each process apart, so every "
                      "worker multiplies the limits; leave it unset (the service's database) or name "
                      "a shared store such as redis://")


def load(instance_path: str, test_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults, then the environment, then `test_config`; checked for production safety."""
    config = defaults(instance_path)
    config.update(from_environment(os.environ))
    if test_config:
        config.update(test_config)
    check_environment(config)
    production = config["CONSENT_ENV"] == "production"
    config["MAX_CONTENT_LENGTH"] = config["PAGE_MAX_BYTES"]
    if not config["RATELIMIT_STORAGE_URI"]:
        config["RATELIMIT_STORAGE_URI"] = DATABASE_RATELIMIT_STORAGE if production else "memory://"
    if production:  # the session cookie (CSRF token, chosen language) travels only over https
        config.update(SESSION_COOKIE_SECURE=True, SESSION_COOKIE_HTTPONLY=True)
    check_production(config)
    try:  # a typo is found when the service starts, not when a notice run is due
        parse_rate(config["POLICY_NOTICE_RATE"])
    except PolicyError as exc:
        raise UnsafeConfigError(f"CONSENT_POLICY_NOTICE_RATE: {exc}") from None
    return config
