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


class UnknownPurposeError(ConsentServiceError):
    """A purpose key that is not in the catalog."""


_DEFAULTS: tuple[Purpose, ...] = (
    Purpose("email_marketing", "Email about programs, services and events", Basis.OPT_OUT,
            Channel.EMAIL, CHILD_AGE, has_topics=True),
    Purpose("postal_marketing", "Postal mail about programs", Basis.OPT_OUT, Channel.POSTAL, CHILD_AGE),
    Purpose("photo_video", "Being photographed or filmed at library activities", Basis.OPT_OUT,
            Channel.NONE, CHILD_AGE),
    Purpose("contact_update", "Contact details sent to a vendor that keeps them current",
            Basis.OPT_OUT, Channel.NONE, CHILD_AGE, discloses_to_vendor=True),
    Purpose("third_party_modeling", "Data sent to a vendor that builds models to reach patrons",
            Basis.OPT_OUT, Channel.NONE, CHILD_AGE, discloses_to_vendor=True),
    Purpose("child_online_services", "A child's use of online services that collect personal information",
            Basis.GUARDIAN_ONLY, Channel.NONE, CHILD_AGE),
    Purpose("child_programs", "Collecting a child's information for programs", Basis.GUARDIAN_ONLY,
            Channel.NONE, CHILD_AGE),
    Purpose("minor_card", "A library card for a patron under 17", Basis.GUARDIAN_ONLY, Channel.NONE,
            MINOR_CARD_AGE),
)

EMAIL_PURPOSE = "email_marketing"


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
