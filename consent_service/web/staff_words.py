"""What the staff pages share: words for the ledger's codes (reasons, sources, actors, decisions),
times in the library's timezone, errors as one line. Staff pages are English only: no gettext."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint
from flask_wtf import FlaskForm

from consent_service import runtime
from consent_service.domain.eligibility import Reason
from consent_service.domain.ledger import Actor, Decision, Source

REASON_WORDS = {
    Reason.INACTIVE: "the library card is not active",
    Reason.NO_EMAIL: "no email address on file",
    Reason.NO_POSTAL_ADDRESS: "no complete postal address on file",
    Reason.ADDRESS_UNDELIVERABLE: "email to the address bounces (undeliverable)",
    Reason.ADDRESS_SUPPRESSED: "the address reported our email as spam; stopped until someone "
                               "at it opts back in",
    Reason.OPTED_OUT: "said no (opted out)",
    Reason.GUARDIAN_CONSENT_REQUIRED: "a minor: needs a parent's or guardian's yes",
    Reason.NOT_OPTED_IN: "needs a yes (opt-in), and has not given one",
}
# The photo roster's short form of the same reasons, for a sheet read at an event.
ROSTER_WORDS = {
    **REASON_WORDS,
    Reason.OPTED_OUT: "declined photos",
    Reason.GUARDIAN_CONSENT_REQUIRED: "under 13, no guardian's consent",
    Reason.NOT_OPTED_IN: "has not agreed to photos",
}
SOURCE_WORDS = {
    Source.UNSUBSCRIBE_LINK: "Unsubscribe link",
    Source.ONE_CLICK: "One-click unsubscribe",
    Source.PREFERENCE_CENTER: "Preference center",
    Source.GUARDIAN_PAGE: "Guardian page",
    Source.STAFF_DESK: "Staff at the desk",
    Source.STAFF_PHONE: "Staff on the phone",
    Source.STAFF_EMAIL: "Staff, by email",
    Source.STAFF_PAPER_FORM: "Staff, on a paper form",
    Source.SENDGRID_WEBHOOK: "SendGrid event",
    Source.SENDGRID_RECONCILE: "SendGrid reconcile",
    Source.IMPORT: "Import",
    Source.API: "API",
    Source.GPC: "Global Privacy Control",
    Source.ERASURE: "Erasure",
}
ACTOR_WORDS = {Actor.PATRON: "patron", Actor.GUARDIAN: "guardian", Actor.STAFF: "staff",
               Actor.SYSTEM: "system"}
DECISION_WORDS = {Decision.OPT_IN: "yes (opt in)", Decision.OPT_OUT: "no (opt out)"}
ACCESS_WORDS = {"view": "opened the patron page", "photo_roster": "photo roster check"}


def words(table: dict[Any, str], code: str | None) -> str:
    """The words for a code; an unknown code (an old source, say) is shown as it is."""
    return table.get(code, code or "") if code is not None else ""


def sentence(error: Exception) -> str:
    """An error's message as one sentence for a staff page (its words as they are: staff may see
    the addresses and card numbers it names)."""
    text = " ".join(str(error).split()) or "That did not work"
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def first_error(form: FlaskForm) -> str:
    """The first thing wrong with a submitted form, as one line."""
    for errors in form.errors.values():
        for error in errors:
            return str(error)
    return "Check the form and try again."


def staff_time(at: datetime | None) -> str:
    """A time as staff read it: in the library's timezone, to the minute."""
    if at is None:
        return ""
    local = at.astimezone(ZoneInfo(runtime.context().timezone))
    return local.strftime("%Y-%m-%d %H:%M %Z")


def _words_context() -> dict[str, Any]:
    return {"reason_words": REASON_WORDS, "roster_words": ROSTER_WORDS,
            "source_words": SOURCE_WORDS, "actor_words": ACTOR_WORDS,
            "decision_words": DECISION_WORDS, "access_words": ACCESS_WORDS, "words": words}


def use_in(bp: Blueprint) -> None:
    """Give a staff blueprint's templates these words and the `staff_time` filter."""
    bp.context_processor(_words_context)
    bp.add_app_template_filter(staff_time, "staff_time")
