"""Policy versions: when a new version may take effect, who is told of a material change, and how
fast the notices go out."""

from __future__ import annotations

import re
from datetime import date, datetime
from enum import StrEnum

from consent_service.domain import ConsentServiceError
from consent_service.domain.ledger import age_on
from consent_service.domain.purposes import CHILD_AGE


class PolicyError(ConsentServiceError):
    """A policy version that cannot be published or announced as asked."""


class NoticeSkip(StrEnum):
    """Why a patron is not sent a policy-change notice."""

    ALREADY_NOTIFIED = "already_notified"  # an earlier (interrupted) run told them
    INACTIVE = "inactive"
    NO_EMAIL = "no_email"  # none on file, or erased
    CHILD_UNDER_13 = "child_under_13"  # their guardians are told, as patrons of their own
    ADDRESS_UNDELIVERABLE = "address_undeliverable"
    ADDRESS_SUPPRESSED = "address_suppressed"  # a spam report not lifted since


def notice_skip(*, active: bool, has_email: bool, birth_date: date | None, today: date,
                suppressed: bool, undeliverable: bool) -> NoticeSkip | None:
    """Why a patron is not sent a policy-change notice, or None when they are.

    A notice is not marketing, so decisions (opt-outs of email or of a topic) play no part. It never
    goes to an inactive patron (the design: an inactive patron gets nothing), to a patron without an
    email address (an erased patron has none), to a child under 13 (no email to children; their
    address is usually a guardian's, who is told as a patron), nor to an address that bounced or
    was reported as spam and has not opted in since. First reason wins, in that order."""
    if not active:
        return NoticeSkip.INACTIVE
    if not has_email:
        return NoticeSkip.NO_EMAIL
    if birth_date is not None and age_on(birth_date, today) < CHILD_AGE:
        return NoticeSkip.CHILD_UNDER_13
    if undeliverable:
        return NoticeSkip.ADDRESS_UNDELIVERABLE
    if suppressed:
        return NoticeSkip.ADDRESS_SUPPRESSED
    return None


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/|per)\s*(s|sec|second|m|min|minute)\s*$", re.I)


def parse_rate(text: str) -> float:
    """Messages per second from `N/second`, `N per second`, `N/minute` or `N per minute` (also
    `s`, `sec`, `m`, `min`); a rate must be positive.

    :raise PolicyError: for anything else, naming the forms accepted.
    """
    match = _RATE.match(text or "")
    rate = float(match.group(1)) if match else 0.0
    if rate <= 0 or match is None:
        raise PolicyError(f"a notice rate is like '10/second' or '300/minute', not {text!r}")
    return rate if match.group(2).lower().startswith("s") else rate / 60


def check_effective(effective_at: datetime, *, latest: datetime | None, now: datetime) -> None:
    """A new version takes effect no earlier than now and strictly after the latest version.

    No back-dating: every decision records the version in force when it was made, and the events
    recorded since a back-dated effective time were stamped with the older version; publishing
    one would make the ledger say they were made under words nobody had seen.

    :raise PolicyError: naming the rule broken.
    """
    if effective_at < now:
        raise PolicyError(f"the effective date {effective_at.date().isoformat()} is in the past; "
                          "a policy version cannot be back-dated (decisions made since were "
                          "recorded under the version then in force)")
    if latest is not None and effective_at <= latest:
        raise PolicyError(f"the effective date must be after the latest version's "
                          f"({latest.date().isoformat()})")
