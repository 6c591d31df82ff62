"""Email and postal addresses: normalising, validating, and the keyed hash that email decisions hang on."""

from __future__ import annotations

import hashlib
import hmac

from email_validator import EmailNotValidError, validate_email

from consent_service.domain import ConsentServiceError


class InvalidEmailError(ConsentServiceError):
    """An email address that cannot receive mail as written."""


def normalize_email(raw: str) -> str:
    """The canonical form of an address: trimmed, syntax-checked, lower-cased.

    Lower-casing the local part is technically lossy (RFC 5321), but SendGrid and every mailbox
    provider the library's patrons use treat it case-insensitively, and an unsubscribe must match
    however the address was typed. No DNS lookup: imports must not depend on the network.
    """
    text = raw.strip()
    try:
        checked = validate_email(text, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise InvalidEmailError(f"not a valid email address: {exc}") from None
    return checked.normalized.lower()


def address_key(secret: bytes, normalized_email: str) -> str:
    """The keyed hash (HMAC-SHA256, hex) that identifies an address in the ledger and survives erasure."""
    return hmac.new(secret, normalized_email.encode("utf-8"), hashlib.sha256).hexdigest()


def mask_email(normalized_email: str) -> str:
    """Show enough of an address for its owner to recognise it: `j•••@example.org`."""
    local, _, domain = normalized_email.partition("@")
    return f"{local[:1]}•••@{domain}"
