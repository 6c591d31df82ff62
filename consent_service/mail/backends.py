"""Where a composed message goes: an .eml file per message, or memory (tests). SendGrid's backend
is the adapter's (consent_service.sendgrid.mailer)."""

from __future__ import annotations

import os
import tempfile
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from consent_service.mail.compose import build_email
from consent_service.models import OutboxMessage


class Mailer(Protocol):
    def send(self, message: OutboxMessage) -> str | None:
        """Hand one message to the provider; return the provider's message id, if it gives one."""
        ...


class FileMailer:
    """Writes each message as `<outbox id>-<template>.eml` in `directory`; a resend overwrites."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def send(self, message: OutboxMessage) -> str | None:
        email_message = build_email(message)
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"{message.id}-{message.template}.eml"
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".eml.tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(email_message.as_bytes())
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return str(email_message["Message-ID"])


class MemoryMailer:
    """Keeps every message it is given in `.sent`, for tests."""

    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []

    def send(self, message: OutboxMessage) -> str | None:
        email_message = build_email(message)
        self.sent.append(email_message)
        return str(email_message["Message-ID"])
