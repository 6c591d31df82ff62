"""A person's data as a readable page, as a JSON download, and a consent receipt as a JSON
download: what the preference center (a patron's own) and the family page (a child's) share."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from flask import Response, render_template
from flask_babel import format_datetime, lazy_gettext

from consent_service.domain.ledger import Actor, Source
from consent_service.domain.purposes import PurposeKey

PURPOSE_WORDS = {
    PurposeKey.EMAIL_MARKETING: lazy_gettext("Email from the library"),
    PurposeKey.POSTAL_MARKETING: lazy_gettext("Postal mail"),
    PurposeKey.PHOTO_VIDEO: lazy_gettext("Photos and video at library events"),
    PurposeKey.CONTACT_UPDATE: lazy_gettext("Sharing to keep contact details current"),
    PurposeKey.THIRD_PARTY_MODELING: lazy_gettext("Sharing to reach more people"),
    PurposeKey.CHILD_ONLINE_SERVICES: lazy_gettext("A child's online services"),
    PurposeKey.CHILD_PROGRAMS: lazy_gettext("A child's programs"),
    PurposeKey.MINOR_CARD: lazy_gettext("A library card for a minor"),
}
SOURCE_WORDS = {
    Source.UNSUBSCRIBE_LINK: lazy_gettext("Unsubscribe link in an email"),
    Source.ONE_CLICK: lazy_gettext("One-click unsubscribe from the mail program"),
    Source.PREFERENCE_CENTER: lazy_gettext("This preference page"),
    Source.GUARDIAN_PAGE: lazy_gettext("A parent's or guardian's page"),
    Source.STAFF_DESK: lazy_gettext("At a library desk"),
    Source.STAFF_PHONE: lazy_gettext("By phone to library staff"),
    Source.STAFF_EMAIL: lazy_gettext("By email to library staff"),
    Source.STAFF_PAPER_FORM: lazy_gettext("A paper form"),
    Source.SENDGRID_WEBHOOK: lazy_gettext("The library's mail provider"),
    Source.SENDGRID_RECONCILE: lazy_gettext("The library's mail provider's list"),
    Source.IMPORT: lazy_gettext("The library's earlier records"),
    Source.API: lazy_gettext("Another library system"),
    Source.GPC: lazy_gettext("Global Privacy Control signal from your browser"),
    Source.ERASURE: lazy_gettext("A request to erase the data"),
}
ACTOR_WORDS = {
    Actor.PATRON: lazy_gettext("The card holder"),
    Actor.GUARDIAN: lazy_gettext("A parent or guardian"),
    Actor.STAFF: lazy_gettext("Library staff"),
    Actor.SYSTEM: lazy_gettext("The library's systems"),
}
NOT_YOURS = lazy_gettext("Someone using the same email address, or the mail provider")


def words(table: dict[Any, Any], key: str | None) -> str:
    """The words for a key, or the key itself for one the table does not know."""
    return str(table.get(key, key or ""))


def when(iso: str | None) -> str:
    """An ISO time from the data, as the page's language writes a date and time."""
    return format_datetime(datetime.fromisoformat(iso), "medium") if iso else "—"


def data_page(data: dict[str, Any], *, title: str, json_url: str,
              receipt_url: Callable[[str], str], back_url: str) -> str:
    """The readable page of `data` (services.patron_data.patron_data)."""
    return render_template("public/data.html", data=data, title=title, json_url=json_url,
                           receipt_url=receipt_url, back_url=back_url, words=words,
                           purposes=PURPOSE_WORDS, sources=SOURCE_WORDS, actors=ACTOR_WORDS,
                           not_yours=NOT_YOURS, when=when)


def json_download(value: dict[str, Any], filename: str) -> Response:
    """A JSON attachment (UTF-8, indented for reading)."""
    return Response(json.dumps(value, indent=2, ensure_ascii=False) + "\n",
                    mimetype="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})
