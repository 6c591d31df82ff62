"""A consent map: which opt-ins an ILS keeps (a Koha patron attribute, an Evergreen statistical
category, a Sierra PCODE, a Polaris user-defined field) mean which decision here.

The map is a small TOML file, one `[[consent]]` table per field:

    [[consent]]
    field = "NEWSLETTER"          # attribute code, statistical category, or column name
    purpose = "email_marketing"
    topic = "library_news"        # leave out for the whole purpose
    opt_in = ["1", "yes"]         # values that mean yes (compared trimmed, in any case)
    opt_out = ["0", "no"]         # values that mean no; any other value records nothing

The README's "From your ILS" has an example per system. What an ILS value records, and when, is
`decide` below.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from consent_service.domain import ConsentServiceError
from consent_service.domain.ledger import Decision

_KEYS = {"field", "purpose", "topic", "opt_in", "opt_out"}


class ConsentMapError(ConsentServiceError):
    """A consent map that cannot be read or says something that cannot be right."""


@dataclass(frozen=True)
class ConsentRule:
    """One ILS field and what its values mean."""

    field: str
    purpose: str
    topic: str | None
    opt_in: frozenset[str]
    opt_out: frozenset[str]

    @property
    def detail(self) -> str:
        """The field, as the events it records name it (`source_detail`)."""
        return f"ils:{self.field}"

    def decision(self, value: str) -> Decision | None:
        text = value.strip().lower()
        if text in self.opt_in:
            return Decision.OPT_IN
        if text in self.opt_out:
            return Decision.OPT_OUT
        return None


def load_consent_map(path: Path) -> tuple[ConsentRule, ...]:
    """The rules of a consent map file; ConsentMapError naming the file and the table when it is
    not TOML or a rule is incomplete, unknown, or means yes and no by the same value."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConsentMapError(f"{path.name}: not a TOML consent map: {exc}") from None
    tables = data.get("consent")
    unknown = sorted(set(data) - {"consent"})
    if unknown or not isinstance(tables, list) or not tables:
        raise ConsentMapError(f"{path.name}: a consent map is a list of [[consent]] tables"
                              + (f"; unknown key(s): {', '.join(unknown)}" if unknown else ""))
    return tuple(_rule(path.name, number, table) for number, table in enumerate(tables, start=1))


def _rule(file_name: str, number: int, table: object) -> ConsentRule:
    where = f"{file_name}: [[consent]] number {number}"
    if not isinstance(table, Mapping):
        raise ConsentMapError(f"{where} is not a table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConsentMapError(f"{where}: unknown key(s) {', '.join(unknown)}; the keys are "
                              f"{', '.join(sorted(_KEYS))}")
    texts = {}
    for key in ("field", "purpose", "topic"):
        value = table.get(key, "")
        if not isinstance(value, str) or (key != "topic" and not value.strip()):
            raise ConsentMapError(f"{where}: {key} must be a non-empty text")
        texts[key] = value.strip()
    values = {}
    for key in ("opt_in", "opt_out"):
        listed = table.get(key, [])
        if not isinstance(listed, list) or not all(isinstance(v, str) for v in listed):
            raise ConsentMapError(f"{where}: {key} must be a list of texts, e.g. [\"1\"]")
        values[key] = frozenset(v.strip().lower() for v in listed)
    if not values["opt_in"] and not values["opt_out"]:
        raise ConsentMapError(f"{where}: give the values that mean yes (opt_in) or no (opt_out)")
    both = values["opt_in"] & values["opt_out"]
    if both:
        raise ConsentMapError(f"{where}: {', '.join(sorted(both))} cannot mean both yes and no")
    return ConsentRule(texts["field"], texts["purpose"], texts["topic"] or None,
                       values["opt_in"], values["opt_out"])


def decide(said: Decision, last_from_ils: Decision | None, in_force: Decision | None
           ) -> bool:
    """Whether what the ILS says (`said`) is recorded, given what this field last recorded for the
    patron (`last_from_ils`, None if never) and the decision in force here (None if none).

    An ILS export carries no record of when a box was ticked (Koha bug 20380), so it must not
    overturn what a person told us since:
    - a value the field already recorded, unchanged in the ILS, records nothing (a daily import is
      quiet);
    - a changed value is news (someone changed the record in the ILS) and is recorded, unless it is
      what is in force already;
    - the first time a field is seen, an opt-out is recorded unless an opt-out is in force, and an
      opt-in only where nothing at all is in force: it may set a starting point, never overturn a
      decision made here or elsewhere.
    """
    if said == last_from_ils:
        return False
    if last_from_ils is not None:
        return said != in_force
    if said is Decision.OPT_OUT:
        return in_force is not Decision.OPT_OUT
    return in_force is None
