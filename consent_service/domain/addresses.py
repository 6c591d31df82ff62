"""Email and postal addresses: normalising, validating, and the keyed hash that email decisions hang on."""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from consent_service.domain import ConsentServiceError


class InvalidEmailError(ConsentServiceError):
    """An email address that cannot receive mail as written."""


# Besides letters and digits, what the local part (before the @) may hold: the characters that
# real mailboxes use (first.last, first_last, first-last, user+tag, o'brien).
LOCAL_PART_PUNCTUATION = frozenset(".-_+'")


def normalize_email(raw: str, *, strict: bool = True) -> str:
    """The canonical form of an address: trimmed, syntax-checked, lower-cased.

    Lower-casing the local part is technically lossy (RFC 5321), but SendGrid and every mailbox
    provider the library's patrons use treat it case-insensitively, and an unsubscribe must match
    however the address was typed. No DNS lookup: imports must not depend on the network.

    The syntax is email-validator's (RFC 5322 and 6531, no quoted local part), and, when `strict`,
    the local part must also be what a real mail system delivers to: letters (any script, with
    their combining marks) and digits, and `.`, `_`, `-`, `+`, `'` (o'brien), starting with a
    letter or a digit. RFC 5322 also allows `!#$%&*/=?^`{|}~`, but no mailbox provider hands out
    such addresses, and an address like `=cmd|'/Ccalc'!A0@example.org` is valid to the RFC while
    it is a formula to a spreadsheet and a trap in every tool the address passes through: refusing
    it where addresses enter costs no patron a mailbox. `strict=False` is for an address another
    system reports (a SendGrid event or suppression): it was mailed already, and its opt-out must
    still find the address it belongs to.

    :raise InvalidEmailError: saying what is wrong with the address.
    """
    text = raw.strip()
    if _is_plain(text):
        return text.lower()
    return full_check(text, strict=strict)


def full_check(text: str, *, strict: bool = True) -> str:
    """`normalize_email` without its shortcut for everyday addresses: email-validator's syntax
    check, then (when `strict`) the local-part rule. Kept apart so a test can hold the two equal."""
    try:
        checked = validate_email(text, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise InvalidEmailError(f"not a valid email address: {exc}") from None
    if strict:
        problem = _local_part_problem(checked.local_part)
        if problem:
            raise InvalidEmailError(f"not a valid email address: {problem}")
    return checked.normalized.lower()


# The everyday address, which email-validator accepts and writes as it is (a property test holds
# this equal to the full check): an ASCII local part of letters, digits and . _ - + ' (starting
# with a letter or digit, no dot doubled or last), and a domain of plain labels under an alphabetic
# top-level domain that is not special-use. Checking it is a regular expression, where the full
# check costs 100 µs (most of a first import's parsing). Anything else takes the full check.
_PLAIN = re.compile(r"[a-z0-9](?:[a-z0-9_+'-]|\.(?=[a-z0-9_+'-])){0,63}"
                    r"@((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+)([a-z]{2,63})", re.IGNORECASE)
_SPECIAL_USE = frozenset(SPECIAL_USE_DOMAIN_NAMES)


def _is_plain(text: str) -> bool:
    if len(text) > 200 or not text.isascii():
        return False
    match = _PLAIN.fullmatch(text)
    return (match is not None and "--" not in match.group(1)
            and match.group(2).lower() not in _SPECIAL_USE
            and len(text.partition("@")[0]) <= 64)


def _local_part_problem(local: str) -> str | None:
    """What in the part before the @ no real mailbox has, or None."""
    first = local[:1]
    if not (first.isdecimal() or unicodedata.category(first).startswith("L")):
        return "the part before the @-sign must start with a letter or a digit"
    for char in local:
        if char.isdecimal() or char in LOCAL_PART_PUNCTUATION:
            continue
        if unicodedata.category(char)[0] not in "LM":
            return (f"the part before the @-sign may hold only letters, digits and . _ - + ' "
                    f"(not {char!r})")
    return None


def address_key(secret: bytes, normalized_email: str) -> str:
    """The keyed hash (HMAC-SHA256, hex) that identifies an address in the ledger and survives erasure."""
    return hmac.new(secret, normalized_email.encode("utf-8"), hashlib.sha256).hexdigest()


def keyed_address_mac(secret: bytes) -> hmac.HMAC:
    """The HMAC of `address_key`, keyed and given no address yet: a copy of it, given the
    address, gives the same key (for many addresses, the key is prepared once)."""
    return hmac.new(secret, digestmod=hashlib.sha256)


def mask_email(normalized_email: str) -> str:
    """Show enough of an address for its owner to recognise it: `j•••@example.org`."""
    local, _, domain = normalized_email.partition("@")
    return f"{local[:1]}•••@{domain}"
