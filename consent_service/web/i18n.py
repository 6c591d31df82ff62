"""The pages' language, English or Spanish: the switch, else the patron's, else the browser's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from flask import Flask, g, has_request_context, request
from flask.wrappers import Response
from flask_babel import get_locale, refresh

from consent_service.services.topics import name_in

LANGUAGES = {"en": "English", "es": "Español"}
DEFAULT_LANGUAGE = "en"
COOKIE = "lang"
SWITCH_ARG = "lang"
COOKIE_MAX_AGE = 365 * 86400


def select_locale() -> str:
    """The language of this response: the switch just used (`?lang=`), the one chosen before (the
    cookie), the patron's preferred language on a page opened by their signed link, then the
    browser's Accept-Language, then English."""
    if not has_request_context():
        return DEFAULT_LANGUAGE
    for chosen in (request.args.get(SWITCH_ARG), request.cookies.get(COOKIE),
                   g.get("patron_language")):
        if chosen in LANGUAGES:
            return chosen
    return request.accept_languages.best_match(list(LANGUAGES), default=DEFAULT_LANGUAGE)


def use_patron_language(language: str) -> None:
    """On a page opened by a patron's link: their preferred language, unless they chose another."""
    g.patron_language = language
    refresh()


def current_language() -> str:
    return str(get_locale() or DEFAULT_LANGUAGE)


def set_switch_path(path: str) -> None:
    """Where the language switch leads when this response's own URL cannot be fetched with GET."""
    g.language_switch_path = path


def _remember_choice(response: Response) -> Response:
    chosen = request.args.get(SWITCH_ARG)
    if chosen in LANGUAGES:
        response.set_cookie(COOKIE, chosen, max_age=COOKIE_MAX_AGE, samesite="Lax", httponly=True,
                            secure=request.is_secure)
    if response.mimetype == "text/html":
        response.vary.add("Accept-Language")
        response.vary.add("Cookie")
    return response


def _switch_context() -> dict[str, Any]:
    if not has_request_context():
        return {}
    language = current_language()
    # one leading slash: a path like //host must not become a link to another site
    path = g.get("language_switch_path") or "/" + quote(request.path.lstrip("/"), safe="/")
    return {
        "current_language": language,
        "language_switch": [
            {"code": code, "name": name, "current": code == language,
             "url": f"{path}?{SWITCH_ARG}={code}"}
            for code, name in LANGUAGES.items()
        ],
    }


def in_language(names: Mapping[str, str]) -> str:
    """A topic's name in the page's language (the `in_language` template filter)."""
    return name_in(names, current_language())


def init_app(app: Flask) -> None:
    app.after_request(_remember_choice)
    app.context_processor(_switch_context)
    app.jinja_env.filters["in_language"] = in_language
