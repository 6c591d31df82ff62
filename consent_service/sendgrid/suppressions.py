"""SendGrid's suppression lists in the library's terms: unsubscribe-group and global entries to add,
remove and search, and the lists reconciliation reads, page by page."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from consent_service.sendgrid.client import SendGridApi

PAGE_SIZE = 500  # the largest page SendGrid serves
BATCH_SIZE = 500  # addresses per add or search call


@dataclass(frozen=True)
class ListedAddress:
    """An entry of one of SendGrid's lists: the address as SendGrid keeps it, since when, and for
    group suppressions the group; for bounces, SendGrid's reason."""

    email: str
    created: datetime
    group_id: int | None = None
    reason: str = ""


class SuppressionClient:
    """Unsubscribe groups, global unsubscribes, spam reports and bounces. Errors are those of
    SendGridApi: SendGridUnavailableError (try later) and SendGridRejectedError (refused)."""

    def __init__(self, api: SendGridApi) -> None:
        self._api = api

    # -- writes ------------------------------------------------------------------------------------

    def suppress_in_group(self, group_id: int, emails: Sequence[str]) -> None:
        """Add addresses to a group's suppressions (already there: no change)."""
        for chunk in _chunks(emails):
            self._api.request("POST", ["asm", "groups", group_id, "suppressions"],
                              body={"recipient_emails": chunk})

    def unsuppress_in_group(self, group_id: int, email: str) -> None:
        """Take one address out of a group's suppressions (absent: no change)."""
        self._api.request("DELETE", ["asm", "groups", group_id, "suppressions", email])

    def suppressed_in_group(self, group_id: int, emails: Sequence[str]) -> set[str]:
        """Which of these addresses are in the group's suppressions (as SendGrid spells them)."""
        found: set[str] = set()
        for chunk in _chunks(emails):
            answer = self._api.request(
                "POST", ["asm", "groups", group_id, "suppressions", "search"],
                body={"recipient_emails": chunk})
            found.update(str(email).lower() for email in answer or [])
        return found

    def globally_unsubscribed(self, email: str) -> bool:
        """Whether the address is on the global unsubscribe list."""
        answer = self._api.request("GET", ["asm", "suppressions", "global", email])
        return bool(answer and answer.get("recipient_email"))

    def unsubscribe_globally(self, emails: Sequence[str]) -> None:
        """Add addresses to the global unsubscribe list (already there: no change)."""
        for chunk in _chunks(emails):
            self._api.request("POST", ["asm", "suppressions", "global"],
                              body={"recipient_emails": chunk})

    def resubscribe_globally(self, email: str) -> None:
        """Take one address off the global unsubscribe list (absent: no change)."""
        self._api.request("DELETE", ["asm", "suppressions", "global", email])

    # -- reads for reconciliation ------------------------------------------------------------------

    def group_suppressions(self) -> list[ListedAddress]:
        """Every group suppression of the account, with its group and time (one call: SendGrid
        does not page this list)."""
        rows = self._api.request("GET", ["asm", "suppressions"]) or []
        return [ListedAddress(str(row["email"]), _time(row.get("created_at")), int(row["group_id"]))
                for row in rows]

    def global_unsubscribes(self) -> Iterator[ListedAddress]:
        return self._paged(["suppression", "unsubscribes"])

    def spam_reports(self) -> Iterator[ListedAddress]:
        return self._paged(["suppression", "spam_reports"])

    def bounces(self) -> Iterator[ListedAddress]:
        return self._paged(["suppression", "bounces"])

    def _paged(self, path: list[str | int]) -> Iterator[ListedAddress]:
        """Read a list page by page (limit/offset) until a short page."""
        offset = 0
        while True:
            page = {"limit": PAGE_SIZE, "offset": offset}
            rows = self._api.request("GET", path, query=page) or []
            for row in rows:
                yield ListedAddress(str(row["email"]), _time(row.get("created")),
                                    reason=str(row.get("reason") or "")[:200])
            if len(rows) < PAGE_SIZE:
                return
            offset += PAGE_SIZE


def suppression_client(config: Mapping[str, Any], *, read_attempts: int = 1,
                       sleep: Callable[[float], None] = time.sleep) -> SuppressionClient:
    """The client for the configured account (CONSENT_SENDGRID_API_KEY, _API_HOST, _API_TIMEOUT).
    Workers keep `read_attempts=1` (their outbox retries); a command may wait and read again."""
    api = SendGridApi(config["SENDGRID_API_KEY"], config["SENDGRID_API_HOST"],
                      timeout=float(config.get("SENDGRID_API_TIMEOUT", 10)),
                      read_attempts=read_attempts, sleep=sleep)
    return SuppressionClient(api)


def _chunks(emails: Sequence[str]) -> Iterator[list[str]]:
    for start in range(0, len(emails), BATCH_SIZE):
        yield list(emails[start:start + BATCH_SIZE])


def _time(value: Any) -> datetime:
    try:
        return datetime.fromtimestamp(int(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.fromtimestamp(0, UTC)

