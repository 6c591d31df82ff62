"""Email topics: the library's mailing subjects, each mapped to a SendGrid unsubscribe group."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service.domain import ConsentServiceError
from consent_service.domain.text import UnsafeTextError, clean_text
from consent_service.models import Topic

_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class InvalidTopicError(ConsentServiceError):
    """A topic key, name or SendGrid group that cannot be used."""


def add_topic(session: Session, *, key: str, name: str, sendgrid_group_id: int | None,
              now: datetime, names: Mapping[str, str] | None = None) -> Topic:
    """Add a topic, or update an existing one's name (and its group, and its name in another
    language, when one is given). Keys are lower-case letters, digits, `_` and `-`; a SendGrid group
    belongs to one topic only. `names` maps a language (`es`) to the topic's name in it; `name` is
    the English name, shown in any language without a name of its own."""
    key, name = key.strip(), name.strip()
    if not _KEY.match(key):
        raise InvalidTopicError(
            f"topic key {key!r} must be 1-64 lower-case letters, digits, '_' or '-'")
    translated = {language: _name(text) for language, text in (names or {}).items()}
    name = _name(name)
    if sendgrid_group_id is not None:
        if sendgrid_group_id <= 0:
            raise InvalidTopicError("a SendGrid group id is a positive number")
        holder = session.scalar(select(Topic).where(Topic.sendgrid_group_id == sendgrid_group_id))
        if holder is not None and holder.key != key:
            raise InvalidTopicError(
                f"SendGrid group {sendgrid_group_id} already belongs to topic {holder.key!r}")
    topic = session.scalar(select(Topic).where(Topic.key == key))
    if topic is None:
        topic = Topic(key=key, created_at=now)
        session.add(topic)
    topic.name = name
    if translated:
        topic.names = {**(topic.names or {}), **translated}
    if sendgrid_group_id is not None:
        topic.sendgrid_group_id = sendgrid_group_id
    session.commit()
    return topic


def _name(text: str) -> str:
    try:
        name = clean_text(text.strip(), field="a topic name")
    except UnsafeTextError as exc:
        raise InvalidTopicError(str(exc)) from None
    if not name or len(name) > 200:
        raise InvalidTopicError("a topic needs a name of 1-200 characters")
    return name


def topic_names(name: str, names: Mapping[str, str] | None) -> dict[str, str]:
    """A topic's name in each language it has one for (its `name` and `names` columns), English
    (`en`) always."""
    return {**(names or {}), "en": name}


def name_in(names: Mapping[str, str], language: str) -> str:
    """A topic's name in `language`, else in English."""
    return names.get(language) or names["en"]
