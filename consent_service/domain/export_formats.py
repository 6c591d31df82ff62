"""The contact files mailing tools import: which columns, under which names, in which order.

Each format writes the same people (the export's rules do not change with the format), with the
header the tool's own contact import expects:
- `generic`: this service's columns (DESIGN.md);
- `sendgrid`: Marketing Campaigns' reserved fields `email`, `first_name`, `last_name`, and the rest as
  custom fields (create them as Text fields before the first upload; names are letters, digits and
  underscores);
- `mailchimp`: the audience's default fields "Email Address", "First Name", "Last Name", the rest as
  text merge fields (255 bytes each at most, which the links are well under);
- `constant_contact`: its standard headings "Email Address", "First Name", "Last Name", the rest as
  custom fields mapped when importing;
- `libraryaware`: its bulk subscriber upload: email, first name, last name, in that order, no
  header and no other column; every cell of its first row must hold something, so an empty name
  is written as one space. It has no merge fields for our links: its own footer carries its
  unsubscribe link, and its deactivated list must come back to us (README, "To your mailing tool").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from consent_service.domain import ConsentServiceError

# What an email export knows of each row, in the generic file's order.
EMAIL_FIELDS = ("email", "first_name", "last_name", "preferred_language", "patron_id",
                "unsubscribe_url", "preferences_url")


class UnknownExportFormatError(ConsentServiceError):
    """A format name we do not know, or one that cannot carry the purpose asked for."""


@dataclass(frozen=True)
class ExportFormat:
    """A mailing tool's contact file: our field for each of its columns, its header (None: the tool
    takes no header line), and whether an empty name is written as a space."""

    name: str
    columns: tuple[tuple[str, str], ...]  # (its header name, our field)
    header: bool = True
    blank_as_space: bool = False

    @property
    def header_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    def row(self, fields: Mapping[str, str]) -> tuple[str, ...]:
        values = tuple(fields[ours] or "" for _, ours in self.columns)
        if self.blank_as_space:
            return tuple(value or " " for value in values)
        return values


def _named(*pairs: str) -> tuple[tuple[str, str], ...]:
    """Columns from alternating (its name, our field) texts."""
    return tuple(zip(pairs[::2], pairs[1::2], strict=True))


_LINKS_AS_CUSTOM_FIELDS = ("Patron ID", "patron_id", "Language", "preferred_language",
                           "Unsubscribe URL", "unsubscribe_url", "Preferences URL",
                           "preferences_url")

GENERIC = ExportFormat("generic", tuple((field, field) for field in EMAIL_FIELDS))
SENDGRID = ExportFormat("sendgrid", _named(
    "email", "email", "first_name", "first_name", "last_name", "last_name",
    "patron_id", "patron_id", "preferred_language", "preferred_language",
    "unsubscribe_url", "unsubscribe_url", "preferences_url", "preferences_url"))
MAILCHIMP = ExportFormat("mailchimp", _named(
    "Email Address", "email", "First Name", "first_name", "Last Name", "last_name",
    *_LINKS_AS_CUSTOM_FIELDS))
CONSTANT_CONTACT = ExportFormat("constant_contact", _named(
    "Email Address", "email", "First Name", "first_name", "Last Name", "last_name",
    *_LINKS_AS_CUSTOM_FIELDS))
LIBRARYAWARE = ExportFormat("libraryaware", _named(
    "email", "email", "first name", "first_name", "last name", "last_name"),
    header=False, blank_as_space=True)

EXPORT_FORMATS: dict[str, ExportFormat] = {
    f.name: f for f in (GENERIC, SENDGRID, MAILCHIMP, CONSTANT_CONTACT, LIBRARYAWARE)}


def export_format(name: str, *, by_email: bool) -> ExportFormat:
    """The format called `name`; the mailing tools' formats only for an email purpose."""
    chosen = EXPORT_FORMATS.get(name.lower())
    if chosen is None:
        raise UnknownExportFormatError(
            f"format {name!r} is not one of: {', '.join(EXPORT_FORMATS)}")
    if chosen is not GENERIC and not by_email:
        raise UnknownExportFormatError(
            f"format {chosen.name} is a mailing tool's contact list: it is for email purposes; "
            f"export other purposes as generic")
    return chosen
