"""The purpose catalog: what the library may do with a patron's data, on what basis, and at which ages."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from consent_service.domain import ConsentServiceError


class Basis(StrEnum):
    """How a purpose is allowed when nobody has decided yet."""

    OPT_OUT = "opt_out"  # allowed until the person says no
    OPT_IN = "opt_in"  # not allowed until the person says yes
    GUARDIAN_ONLY = "guardian_only"  # only exists for minors; a guardian decides


class Channel(StrEnum):
    """What a purpose needs to reach the patron at all."""

    EMAIL = "email"
    POSTAL = "postal"
    NONE = "none"


class PurposeKey(StrEnum):
    """The purposes' keys: the one place their names are written. Everything else takes them from
    here or from a Catalog (a test checks that every page, export and command knows each one)."""

    EMAIL_MARKETING = "email_marketing"
    POSTAL_MARKETING = "postal_marketing"
    PHOTO_VIDEO = "photo_video"
    CONTACT_UPDATE = "contact_update"
    THIRD_PARTY_MODELING = "third_party_modeling"
    CHILD_ONLINE_SERVICES = "child_online_services"
    CHILD_PROGRAMS = "child_programs"
    MINOR_CARD = "minor_card"


CHILD_AGE = 13  # under this age, only a guardian's opt-in counts (COPPA, the library's policy)
MINOR_CARD_AGE = 17  # under this age, a library card needs a guardian's permission


@dataclass(frozen=True)
class Purpose:
    """One thing the library may do; `guardian_opt_in_under` is the age below which a guardian must opt in."""

    key: str
    label: str
    basis: Basis
    channel: Channel
    guardian_opt_in_under: int
    has_topics: bool = False
    discloses_to_vendor: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", str(self.key))  # a PurposeKey, kept as its plain value


class UnknownPurposeError(ConsentServiceError):
    """A purpose key that is not in the catalog."""


_DEFAULTS: tuple[Purpose, ...] = (
    Purpose(PurposeKey.EMAIL_MARKETING, "Email about programs, services and events", Basis.OPT_OUT,
            Channel.EMAIL, CHILD_AGE, has_topics=True),
    Purpose(PurposeKey.POSTAL_MARKETING, "Postal mail about programs", Basis.OPT_OUT, Channel.POSTAL,
            CHILD_AGE),
    Purpose(PurposeKey.PHOTO_VIDEO, "Being photographed or filmed at library activities",
            Basis.OPT_OUT, Channel.NONE, CHILD_AGE),
    Purpose(PurposeKey.CONTACT_UPDATE, "Contact details sent to a vendor that keeps them current",
            Basis.OPT_OUT, Channel.NONE, CHILD_AGE, discloses_to_vendor=True),
    Purpose(PurposeKey.THIRD_PARTY_MODELING,
            "Data sent to a vendor that builds models to reach patrons",
            Basis.OPT_OUT, Channel.NONE, CHILD_AGE, discloses_to_vendor=True),
    Purpose(PurposeKey.CHILD_ONLINE_SERVICES,
            "A child's use of online services that collect personal information",
            Basis.GUARDIAN_ONLY, Channel.NONE, CHILD_AGE),
    Purpose(PurposeKey.CHILD_PROGRAMS, "Collecting a child's information for programs",
            Basis.GUARDIAN_ONLY, Channel.NONE, CHILD_AGE),
    Purpose(PurposeKey.MINOR_CARD, "A library card for a patron under 17", Basis.GUARDIAN_ONLY,
            Channel.NONE, MINOR_CARD_AGE),
)

EMAIL_PURPOSE: str = PurposeKey.EMAIL_MARKETING.value
# Sharing with vendors: a separate decision, and for a child under 13 a separate guardian opt-in.
VENDOR_PURPOSES: tuple[str, ...] = tuple(str(p.key) for p in _DEFAULTS if p.discloses_to_vendor)
# What a patron decides for themself: every purpose but the guardian-only ones.
PATRON_PURPOSES: tuple[str, ...] = tuple(str(p.key) for p in _DEFAULTS
                                         if p.basis is not Basis.GUARDIAN_ONLY)


class Catalog:
    """The purposes of one deployment: the defaults above with the configured basis overrides applied."""

    def __init__(self, basis_overrides: Mapping[str, str] | None = None) -> None:
        purposes = {p.key: p for p in _DEFAULTS}
        for key, basis in (basis_overrides or {}).items():
            purpose = purposes.get(key)
            if purpose is None:
                raise UnknownPurposeError(f"unknown purpose {key!r} in the basis settings")
            if purpose.basis is Basis.GUARDIAN_ONLY or basis not in (Basis.OPT_IN, Basis.OPT_OUT):
                raise ConsentServiceError(
                    f"purpose {key!r} cannot take basis {basis!r} (opt_in or opt_out, "
                    "and guardian-only purposes are fixed)"
                )
            purposes[key] = replace(purpose, basis=Basis(basis))
        self._purposes = purposes

    def __iter__(self) -> Iterator[Purpose]:
        return iter(self._purposes.values())

    def keys(self) -> list[str]:
        return list(self._purposes)

    def get(self, key: str) -> Purpose:
        """Return the purpose, or raise UnknownPurposeError naming the valid keys."""
        try:
            return self._purposes[key]
        except KeyError:
            raise UnknownPurposeError(
                f"unknown purpose {key!r}; known purposes: {', '.join(self._purposes)}"
            ) from None


def parse_basis_overrides(text: str) -> dict[str, str]:
    """Parse `purpose=basis,purpose=basis` (the CONSENT_PURPOSE_BASIS setting)."""
    overrides: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, basis = item.partition("=")
        if not sep:
            raise ConsentServiceError(f"CONSENT_PURPOSE_BASIS item {item!r} is not purpose=basis")
        overrides[key.strip()] = basis.strip()
    return overrides
