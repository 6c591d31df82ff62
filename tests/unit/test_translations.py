"""The pages' Spanish: every page string is translated, and the compiled catalog is current."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "consent_service" / "translations" / "es" / "LC_MESSAGES"
METHODS = [("consent_service/web/**.py", "python"),
           ("consent_service/templates/**.html", "jinja2")]


def page_strings() -> set[str]:
    keywords = {**DEFAULT_KEYWORDS, "lazy_gettext": None}
    return {message for _, _, message, _, _ in extract_from_dir(ROOT, METHODS, keywords=keywords)
            if isinstance(message, str)}


def spanish() -> dict[str, str]:
    with (CATALOG / "messages.po").open("rb") as handle:
        catalog = read_po(handle, locale="es")
    return {str(m.id): str(m.string) for m in catalog if m.id}


def test_every_string_on_the_pages_has_a_spanish_translation():
    strings, translated = page_strings(), spanish()
    assert len(strings) > 50
    missing = sorted(s for s in strings if not translated.get(s))
    assert missing == [], "run the steps in babel.cfg"


def test_the_catalog_keeps_no_string_the_pages_no_longer_use():
    assert sorted(set(spanish()) - page_strings()) == []


def test_the_compiled_catalog_matches_the_translations():
    with (CATALOG / "messages.mo").open("rb") as handle:
        compiled = {str(m.id): str(m.string) for m in read_mo(handle) if m.id}
    assert compiled == spanish(), "run `pybabel compile` (see babel.cfg)"


def test_placeholders_survive_translation():
    for english, translation in spanish().items():
        for name in ("%(date)s", "%(address)s", "%(topic)s", "%(status)s"):
            assert (name in english) == (name in translation), english
