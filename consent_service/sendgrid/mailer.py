"""SendGrid as a mail backend: the v3 Mail Send API through the official client."""

from __future__ import annotations

from typing import Any

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import Asm, Category, CustomArg, GroupId, Header, Mail

from consent_service.domain.text import one_line
from consent_service.mail.compose import MailDeliveryError
from consent_service.models import OutboxMessage


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
        (where SendGrid's spec also types custom args as an object)."""
        if not message.to_address:
            raise MailDeliveryError(f"mail {message.id} has no recipient address")
        mail = Mail(from_email=message.from_address, to_emails=message.to_address,
                    subject=message.subject, plain_text_content=message.text_body,
                    html_content=message.html_body)
        for name, value in message.headers.items():
            mail.header = Header(name, value, p=0)
        for key, value in message.custom_args.items():
            mail.custom_arg = CustomArg(key, value, p=0)
        mail.category = [Category(message.category), Category(message.template)]
        if message.asm_group_id is not None:
            mail.asm = Asm(GroupId(message.asm_group_id))
        return mail

    def send(self, message: OutboxMessage) -> str | None:
        try:
            response = self._client.send(self.payload(message))
        except HTTPError as exc:
            raise MailDeliveryError(
                f"SendGrid answered {exc.status_code}: {one_line(_decode(exc.body))}") from None
        return response.headers.get("X-Message-Id")


def _decode(body: Any) -> str:
    return body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
