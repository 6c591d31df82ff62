"""The patron exports of the ILSs libraries run (Koha, Evergreen, Sierra, Polaris), read into the
columns of our own patron import.

Each format knows its system's column names, taken from the system's own sources: Koha's
`installer/data/mysql/kohastructure.sql` and `Koha/Patrons/Import.pm`, Evergreen's
`Open-ILS/src/support-scripts/patron_loader.pl.in`, Sierra's patron field definitions (fixed field
51 BIRTH DATE, variable field `z` EMAIL ADDR) and Polaris's PatronRegistration fields; the README's
"From your ILS" says what each format reads. It knows which columns we use, how its values are
written (Sierra's `LAST, FIRST` names and `MM-DD-YYYY` dates, several addresses in one EMAIL ADDR,
Koha's `CODE:value` patron attributes...) and how to tell its header from the others'. Reading a
row gives our column names and values, notes for the operator (the first of several addresses was
used) and problems that reject the row (a juvenile with no birth date would count as an adult).

Values are text here; our import checks them as it checks any file (email syntax, dates, lengths).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date

from consent_service.domain import ConsentServiceError

# Our import's own columns, plus two an ILS gives: its internal id for the patron (`ils_id`: Koha's
# borrowernumber, Sierra's record number, Polaris's PatronID) and the guardian's (`guardian_ils_id`,
# Koha's guarantor borrowernumber), which the import resolves to a card number.
GENERIC_COLUMNS = ("card_number", "first_name", "last_name", "email", "birth_date",
                   "preferred_language", "street", "city", "state", "postal_code",
                   "guardian_card_number", "guardian_email", "status", "ils_id")


class UnknownFormatError(ConsentServiceError):
    """A format name we do not know, or a header no format's signature matches."""


@dataclass(frozen=True)
class ReadRow:
    """A row in our columns: the values, a note per oddity the operator should know of (keyed, so
    that the import can count them), and problems that reject the row."""

    values: dict[str, str]
    notes: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class IlsFormat:
    """One system's patron export: the columns it uses (its name, lower case, -> ours), the columns
    its documentation lists that we do not use (ignored without a "misspelt?" guess), the columns
    whose presence tells its header from the others', and how a row becomes ours."""

    name: str
    label: str
    used: tuple[str, ...]
    documented: frozenset[str]
    signature: frozenset[str]
    read: Callable[[Mapping[str, str]], ReadRow]
    attributes: Callable[[Mapping[str, str]], dict[str, str]] = lambda values: {}
    required: tuple[str, ...] = ()

    def matches(self, header: frozenset[str]) -> int:
        """How well the header fits: one point per signature column it holds, two more when it
        holds the format's required (card number) column, which only this format names so."""
        card = 2 if self.required and set(self.required) <= header else 0
        return len(self.signature & header) + card


def split_attributes(cell: str) -> dict[str, str]:
    """Koha's `patron_attributes` cell, `CODE:value,CODE2:value` (a pair may be quoted when its
    value holds a comma), as {CODE: value}, codes in upper case. A code given twice keeps the last."""
    found: dict[str, str] = {}
    for pair in next(csv.reader([cell]), []):
        code, sep, value = pair.partition(":")
        if sep and code.strip():
            found[code.strip().upper()] = value.strip()
    return found


def language(value: str) -> str:
    """Our language for an ILS's language code: Spanish for es, es-MX, spa, spi, Spanish, 3082...;
    English otherwise (an empty value included: the import's default)."""
    text = value.strip().lower()
    if text.startswith(("es", "sp")) or text in ("3082", "1034", "2058"):
        return "es"
    return "en" if text else ""


_US_DATE = re.compile(r"(\d{1,2})[-/](\d{1,2})[-/](\d{4})")
_ISO_PREFIX = re.compile(r"(\d{4}-\d{2}-\d{2})(?:[ T].*)?")


def iso_date(value: str, *, us: bool) -> tuple[str, str | None]:
    """A date as `YYYY-MM-DD` text for our import, and a problem if it cannot be read. ISO dates
    (with a time after them, as database exports write) are read always; `MM/DD/YYYY` and
    `MM-DD-YYYY` only where the system writes US dates (`us`). Anything else is passed on as it is,
    for our import to reject with its own message."""
    text = value.strip()
    if not text:
        return "", None
    iso = _ISO_PREFIX.fullmatch(text)
    if iso:
        return iso.group(1), None
    us_date = _US_DATE.fullmatch(text)
    if us_date and us:
        month, day, year = (int(part) for part in us_date.groups())
        try:
            return date(year, month, day).isoformat(), None
        except ValueError:
            return text, f"birth date {text!r} is not a date written MM-DD-YYYY"
    if us_date:
        return text, (f"birth date {text!r} is not a date written YYYY-MM-DD (this system "
                      f"writes ISO dates)")
    return text, None


def _words(text: str) -> frozenset[str]:
    """The column names of a documented list, written as words."""
    return frozenset(text.split())


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("t", "true", "1", "y", "yes")


def _lines(*parts: str) -> str:
    return "\n".join(part.strip() for part in parts if part and part.strip())


def _renamed(values: Mapping[str, str], pairs: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Our columns from theirs, for the (theirs, ours) pairs the row holds."""
    return {ours: values[theirs] for theirs, ours in pairs if theirs in values}


def _birth(values: Mapping[str, str], column: str, *, us: bool, out: dict[str, str],
           problems: list[str]) -> None:
    if column in values:
        out["birth_date"], problem = iso_date(values[column], us=us)
        if problem:
            problems.append(problem)


# --- Koha ----------------------------------------------------------------------------------------

def _read_koha(values: Mapping[str, str]) -> ReadRow:
    problems: list[str] = []
    out = _renamed(values, (("cardnumber", "card_number"), ("firstname", "first_name"),
                            ("surname", "last_name"), ("email", "email"), ("city", "city"),
                            ("state", "state"), ("zipcode", "postal_code"),
                            ("borrowernumber", "ils_id")))
    if "address" in values:
        street = " ".join(part for part in (values.get("streetnumber", "").strip(),
                                            values.get("streettype", "").strip(),
                                            values["address"].strip()) if part)
        out["street"] = _lines(street, values.get("address2", ""))
    if "lang" in values:
        out["preferred_language"] = "" if values["lang"].lower() == "default" else language(
            values["lang"])
    _birth(values, "dateofbirth", us=False, out=out, problems=problems)
    guarantor = values.get("guarantor_id", "") or values.get("guarantorid", "")
    if guarantor:
        out["guardian_ils_id"] = guarantor
    return ReadRow(out, problems=tuple(problems))


def _koha_attributes(values: Mapping[str, str]) -> dict[str, str]:
    return split_attributes(values.get("patron_attributes", ""))


# Koha's borrowers columns (kohastructure.sql) and the import tool's extra ones.
_KOHA_DOCUMENTED = _words("""
cardnumber surname firstname middle_name title othernames initials pronouns streetnumber streettype
address address2 city state zipcode country email phone mobile fax emailpro phonepro
b_streetnumber b_streettype b_address b_address2 b_city b_state b_zipcode b_country b_email b_phone
dateofbirth branchcode categorycode dateenrolled dateexpiry password_expiration_date date_renewed
gonenoaddress lost debarred debarredcomment contactname contactfirstname contacttitle borrowernotes
relationship sex password secret auth_method flags userid opacnote contactnote sort1 sort2
altcontactfirstname altcontactsurname altcontactaddress1 altcontactaddress2 altcontactaddress3
altcontactstate altcontactzipcode altcontactcountry altcontactphone smsalertnumber sms_provider_id
privacy privacy_guarantor_fines privacy_guarantor_checkouts checkprevcheckout updated_on lastseen
lang login_attempts overdrive_auth_token anonymized autorenew_checkouts primary_contact_method
patron_attributes guarantor_relationship guarantor_id guarantorid borrowernumber ethnicity ethnotes
""")

KOHA = IlsFormat(
    name="koha", label="Koha borrowers",
    used=("cardnumber", "firstname", "surname", "email", "dateofbirth", "streetnumber", "streettype",
          "address", "address2", "city", "state", "zipcode", "lang", "borrowernumber",
          "guarantor_id", "guarantorid", "patron_attributes"),
    documented=_KOHA_DOCUMENTED,
    signature=frozenset({"cardnumber", "surname", "firstname", "dateofbirth", "categorycode",
                         "branchcode", "borrowernumber", "zipcode", "patron_attributes"}),
    read=_read_koha, attributes=_koha_attributes, required=("cardnumber",))


# --- Evergreen -----------------------------------------------------------------------------------

def _read_evergreen(values: Mapping[str, str]) -> ReadRow:
    problems: list[str] = []
    notes: list[str] = []
    out = _renamed(values, (("cardnumber", "card_number"), ("family_name", "last_name"),
                            ("email", "email"), ("add1_city", "city"), ("add1_state", "state"),
                            ("add1_post_code", "postal_code"), ("guardian_email", "guardian_email")))
    if "first_given_name" in values or "pref_first_given_name" in values:
        # the name the patron asked to be called by, when the record has one
        out["first_name"] = (values.get("pref_first_given_name", "").strip()
                             or values.get("first_given_name", ""))
    if "add1_street1" in values:
        out["street"] = _lines(values["add1_street1"], values.get("add1_street2", ""))
    if "active" in values and values["active"].strip():
        out["status"] = "active" if _truthy(values["active"]) else "inactive"
    _birth(values, "dob", us=False, out=out, problems=problems)
    if _truthy(values.get("juvenile", "")) and not out.get("birth_date"):
        problems.append("juvenile is set but dob is empty: without a birth date the patron "
                        "would count as an adult")
    if values.get("guardian", "").strip() and not values.get("guardian_email", "").strip():
        notes.append("guardian holds a name but guardian_email is empty: no guardian linked")
    return ReadRow(out, tuple(notes), tuple(problems))


def _evergreen_attributes(values: Mapping[str, str]) -> dict[str, str]:
    """Statistical categories (`statcat_name1`/`statcat_value1`...), {NAME: value}."""
    found: dict[str, str] = {}
    for number in range(1, 10):
        name = values.get(f"statcat_name{number}", "").strip()
        if name:
            found[name.upper()] = values.get(f"statcat_value{number}", "").strip()
    return found


_EVERGREEN_STATCATS = tuple(f"statcat_{part}{number}" for number in range(1, 4)
                            for part in ("name", "value"))
_EVERGREEN_DOCUMENTED = _words("""
cardnumber profile usrname passwd net_access_level family_name first_given_name second_given_name
pref_first_given_name name_keywords email home_library day_phone evening_phone other_phone dob
ident_type ident_value active barred juvenile expire_date photo_url guardian guardian_email
add1_street1 add1_street2 add1_city add1_county add1_state add1_country add1_post_code
add2_street1 add2_street2 add2_city add2_county add2_state add2_country add2_post_code
""") | frozenset(_EVERGREEN_STATCATS)

EVERGREEN = IlsFormat(
    name="evergreen", label="Evergreen patron loader",
    used=("cardnumber", "family_name", "first_given_name", "pref_first_given_name", "email", "dob",
          "juvenile", "guardian", "guardian_email", "active", "add1_street1", "add1_street2",
          "add1_city", "add1_state", "add1_post_code", *_EVERGREEN_STATCATS),
    documented=_EVERGREEN_DOCUMENTED,
    signature=frozenset({"cardnumber", "family_name", "first_given_name", "juvenile", "dob",
                         "add1_street1", "add1_post_code", "usrname", "home_library", "guardian"}),
    read=_read_evergreen, attributes=_evergreen_attributes, required=("cardnumber",))


# --- Sierra --------------------------------------------------------------------------------------

_CITY_LINE = re.compile(r"(?P<city>.+?),?\s+(?P<state>[A-Za-z]{2})\.?\s+(?P<zip>\d{5}(?:-\d{4})?)")


def _read_sierra(values: Mapping[str, str]) -> ReadRow:
    problems: list[str] = []
    notes: list[str] = []
    out = _renamed(values, (("p barcode", "card_number"), ("record #(patron)", "ils_id")))
    if "patrn name" in values:
        last, _, first = values["patrn name"].partition(",")
        out["last_name"], out["first_name"] = last.strip(), first.strip()
    if "email addr" in values:
        addresses = [part.strip() for part in re.split(r"[,;]", values["email addr"])
                     if part.strip()]
        out["email"] = addresses[0] if addresses else ""
        if len(addresses) > 1:
            notes.append("EMAIL ADDR holds several addresses: the first is used")
    if "address" in values:
        lines = [part.strip() for part in values["address"].split("$") if part.strip()]
        city = _CITY_LINE.fullmatch(lines[-1]) if lines else None
        if city:
            out["street"] = "\n".join(lines[:-1])
            out["city"], out["state"] = city["city"].strip(), city["state"].upper()
            out["postal_code"] = city["zip"]
        else:
            out["street"] = "\n".join(lines)
            out["city"] = out["state"] = out["postal_code"] = ""
            if lines:
                notes.append("ADDRESS has no `CITY, ST ZIP` line: kept as the street only, so "
                             "the patron has no postal address")
    if "lang pref" in values:
        out["preferred_language"] = language(values["lang pref"])
    _birth(values, "birth date", us=True, out=out, problems=problems)
    return ReadRow(out, tuple(notes), tuple(problems))


_SIERRA_DOCUMENTED = frozenset({
    "record #(patron)", "p barcode", "patrn name", "email addr", "birth date", "address",
    "address2", "telephone", "tele2", "p type", "pcode1", "pcode2", "pcode3", "pcode4",
    "home libr", "exp date", "lang pref", "pmessage", "mblock", "notice pref", "family id",
    "unique id", "note", "money owed", "created(patron)", "updated(patron)", "tot chkout",
    "cur chkout", "circactive",
})

SIERRA = IlsFormat(
    name="sierra", label="Sierra Create Lists export",
    used=("p barcode", "record #(patron)", "patrn name", "email addr", "address", "lang pref",
          "birth date"),
    documented=_SIERRA_DOCUMENTED,
    signature=frozenset({"p barcode", "patrn name", "email addr", "record #(patron)", "p type",
                         "pcode1", "home libr"}),
    read=_read_sierra, required=("p barcode",))


# --- Polaris -------------------------------------------------------------------------------------

def _read_polaris(values: Mapping[str, str]) -> ReadRow:
    problems: list[str] = []
    out = _renamed(values, (("barcode", "card_number"), ("namefirst", "first_name"),
                            ("namelast", "last_name"), ("emailaddress", "email"), ("city", "city"),
                            ("state", "state"), ("postalcode", "postal_code"),
                            ("patronid", "ils_id")))
    if "streetone" in values:
        out["street"] = _lines(values["streetone"], values.get("streettwo", ""))
    if "languageid" in values:
        out["preferred_language"] = language(values["languageid"])
    _birth(values, "birthdate", us=True, out=out, problems=problems)
    return ReadRow(out, problems=tuple(problems))


_POLARIS_USER_FIELDS = tuple(f"user{number}" for number in range(1, 6))
_POLARIS_DOCUMENTED = frozenset({
    "patronid", "barcode", "namefirst", "namelast", "namemiddle", "nametitle", "namesuffix",
    "emailaddress", "altemailaddress", "birthdate", "patroncodeid", "patroncode", "streetone",
    "streettwo", "city", "state", "postalcode", "zipplusfour", "county", "countryid",
    "languageid", "phonevoice1", "phonevoice2", "phonevoice3", "expirationdate", "registrationdate",
    "patronbranchid", "deliveryoptionid", "emailformat", "txtphonenumber", "readinglistflag",
    *_POLARIS_USER_FIELDS,
})

POLARIS = IlsFormat(
    name="polaris", label="Polaris patron export",
    used=("barcode", "namefirst", "namelast", "emailaddress", "birthdate", "streetone", "streettwo",
          "city", "state", "postalcode", "languageid", "patronid", *_POLARIS_USER_FIELDS),
    documented=_POLARIS_DOCUMENTED,
    signature=frozenset({"namefirst", "namelast", "emailaddress", "patroncodeid", "patroncode",
                         "streetone", "postalcode", "patronid"}),
    read=_read_polaris, required=("barcode",))


# --- ours ----------------------------------------------------------------------------------------

GENERIC = IlsFormat(
    name="generic", label="this service's own patron CSV",
    used=GENERIC_COLUMNS, documented=frozenset(),
    signature=frozenset({"card_number", "first_name", "last_name", "birth_date",
                         "preferred_language", "guardian_card_number", "postal_code"}),
    read=lambda values: ReadRow(dict(values)), required=("card_number",))

FORMATS: dict[str, IlsFormat] = {f.name: f for f in (KOHA, EVERGREEN, SIERRA, POLARIS, GENERIC)}


def detect(header: frozenset[str]) -> IlsFormat:
    """The format the header (lower-case names) fits best (`IlsFormat.matches`): it must hold the
    format's card number column or two of its signature columns (else the header is taken for
    ours, the documented one, whose checks name what is missing), and a tie between two formats is
    refused (Koha and Evergreen both call the card `cardnumber`): guessing wrong would read the
    wrong columns."""
    scored = sorted(((f.matches(header), f.name) for f in FORMATS.values()), reverse=True)
    (best, name), (second, other) = scored[0], scored[1]
    if best < 2:
        return GENERIC  # nobody's header: ours is the documented one, and its checks say what is off
    if best == second:
        raise UnknownFormatError(
            f"cannot tell which system wrote this file (it looks like both {name} and {other}); "
            f"pass --format, one of: {', '.join(FORMATS)}")
    return FORMATS[name]


def get(name: str) -> IlsFormat:
    try:
        return FORMATS[name.lower()]
    except KeyError:
        raise UnknownFormatError(
            f"format {name!r} is not one of: auto, {', '.join(FORMATS)}") from None
