"""The application's mail backend, chosen by CONSENT_MAIL_BACKEND: file, memory or sendgrid."""

from __future__ import annotations

from flask import Flask

from consent_service.domain import ConsentServiceError
from consent_service.mail.backends import FileMailer, Mailer, MemoryMailer
from consent_service.sendgrid.mailer import SendGridMailer

BACKENDS = ("file", "memory", "sendgrid")
_MAILER_KEY = "consent_service.mailer"


class MailConfigError(ConsentServiceError):
    """A mail setting the service cannot start with."""


def _build_mailer(app: Flask) -> Mailer:
    config = app.config
    backend = config["MAIL_BACKEND"]
    if backend == "file":
        return FileMailer(config["MAIL_FILE_DIR"])
    if backend == "memory":
        return MemoryMailer()
    if backend == "sendgrid":
        if not config.get("SENDGRID_API_KEY"):
            raise MailConfigError("CONSENT_MAIL_BACKEND=sendgrid needs CONSENT_SENDGRID_API_KEY")
        return SendGridMailer(config["SENDGRID_API_KEY"], config["SENDGRID_API_HOST"],
                              timeout_seconds=float(config["SENDGRID_API_TIMEOUT"]))
    raise MailConfigError(
        f"CONSENT_MAIL_BACKEND must be one of {', '.join(BACKENDS)}, not {backend!r}")


def mailer_for(app: Flask) -> Mailer:
    """The application's mailer, chosen by MAIL_BACKEND; one instance per application (so a test
    can read the memory mailer's `.sent`)."""
    mailer = app.extensions.get(_MAILER_KEY)
    if mailer is None:
        mailer = app.extensions[_MAILER_KEY] = _build_mailer(app)
    return mailer
