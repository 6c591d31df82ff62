"""Helpers for the API tests: the Authorization header, and reading the ledger."""

from __future__ import annotations

from datetime import timedelta

from tests.conftest import NOW

BEFORE = (NOW - timedelta(hours=1)).isoformat()  # an occurred_at an hour before the clock


def bearer(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


def decision_body(card: str, decision: str = "opt_out", **fields: object) -> dict[str, object]:
    return {"card_number": card, "purpose": "email_marketing", "decision": decision,
            "occurred_at": BEFORE, **fields}
