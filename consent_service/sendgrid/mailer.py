"""SendGrid as a mail backend: the v3 Mail Send API through the official client."""

from __future__ import annotations

import http.client
from typing import Any

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import Asm, Category, CustomArg, GroupId, Header, Mail

from consent_service.domain.text import one_line
from consent_service.mail.compose import MailDeliveryError, MailUnavailableError, message_id
from consent_service.models import OutboxMessage
from consent_service.sendgrid.client import rate_limit_reset

_RETRYABLE_STATUSES = frozenset({408, 429})


class SendGridMailer:
    """Sends through SendGrid's v3 Mail Send API with the official client."""

    def __init__(self, api_key: str, host: str, timeout_seconds: float = 30) -> None:
        self._client = SendGridAPIClient(api_key=api_key, host=host)
        self._client.client.timeout = timeout_seconds

    @staticmethod
    def payload(message: OutboxMessage) -> Mail:
        """The Mail Send request for an outbox row: custom args (the patron's opaque id), the
        topic's unsubscribe group, our headers and the category and template as categories.
        Headers and custom args belong to the one recipient, so they go in its personalization
        (where SendGrid's spec also types custom args as an object). The Message-ID is the row's
        own (as the file backend writes it), so a copy sent again after a lost answer is the same
        message to the recipient's mail service."""
        if not message.to_address:
            raise MailDeliveryError(f"mail {message.id} has no recipient address")
        mail = Mail(from_email=message.from_address, to_emails=message.to_address,
                    subject=message.subject, plain_text_content=message.text_body,
                    html_content=message.html_body)
        for name, value in message.headers.items():
            mail.header = Header(name, value, p=0)
        mail.header = Header("Message-ID", message_id(message), p=0)
        for key, value in message.custom_args.items():
            mail.custom_arg = CustomArg(key, value, p=0)
        mail.category = [Category(message.category), Category(message.template)]
        if message.asm_group_id is not None:
            mail.asm = Asm(GroupId(message.asm_group_id))
        return mail

    def send(self, message: OutboxMessage) -> str | None:
        """Hand the message to SendGrid; its X-Message-Id.

        :raise MailUnavailableError: a 408, 429 or 5xx, a timeout or a lost connection: try later.
        :raise MailDeliveryError: any other refusal."""
        payload = self.payload(message)
        try:
            response = self._client.send(payload)
        except HTTPError as exc:
            status = int(exc.status_code)
            text = f"SendGrid answered {status}: {one_line(_decode(exc.body))}"
            if status in _RETRYABLE_STATUSES or status >= 500:
                raise MailUnavailableError(text, status=status,
                                           reset_at=rate_limit_reset(exc.headers)) from None
            raise MailDeliveryError(text) from None
        except (OSError, http.client.HTTPException) as exc:  # timeouts, connections lost
            raise MailUnavailableError(
                f"SendGrid did not answer: {type(exc).__name__}: {exc}") from None
        return response.headers.get("X-Message-Id")


def _decode(body: Any) -> str:
    return body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
