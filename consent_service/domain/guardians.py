"""What a parent or guardian decides for a minor at each age, and the vendors they are told of."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any

from consent_service.domain import ConsentServiceError
from consent_service.domain.ledger import age_on
from consent_service.domain.purposes import VENDOR_PURPOSES, Catalog, Purpose, PurposeKey

# The order a guardian sees the purposes in: what the child does first, vendors last (and apart).
GUARDIAN_ORDER = (PurposeKey.CHILD_ONLINE_SERVICES, PurposeKey.CHILD_PROGRAMS, PurposeKey.MINOR_CARD,
                  PurposeKey.EMAIL_MARKETING, PurposeKey.POSTAL_MARKETING, PurposeKey.PHOTO_VIDEO,
                  PurposeKey.CONTACT_UPDATE, PurposeKey.THIRD_PARTY_MODELING)
MINOR_CARD: str = PurposeKey.MINOR_CARD.value


class VendorMethod(StrEnum):
    """How a guardian's consent to share a young child's data with vendors is collected."""

    SEPARATE_TICK = "separate_tick"  # its own tick box on the guardian's page
    ID_CHECK = "id_check"  # staff check the guardian's ID in person


class GuardianSettingError(ConsentServiceError):
    """A guardian setting (vendors, vendor method, response days) the service cannot work with."""


@dataclass(frozen=True)
class Vendor:
    """A company the library may share patron data with, and the purposes it serves."""

    name: str
    privacy_url: str
    purposes: tuple[str, ...]




def parse_vendors(text: str) -> tuple[Vendor, ...]:
    """Parse the CONSENT_VENDORS setting: `Name|https://privacy.url` items separated by `;`, each
    optionally followed by `|purpose` (contact_update or third_party_modeling); a vendor without a
    purpose is listed for both kinds of sharing."""
    vendors = []
    for item in filter(None, (part.strip() for part in text.split(";"))):
        fields = [field.strip() for field in item.split("|")]
        if len(fields) not in (2, 3) or not fields[0]:
            raise GuardianSettingError(
                f"CONSENT_VENDORS item {item!r} is not Name|https://privacy.url[|purpose]")
        if not fields[1].startswith(("https://", "http://")):
            raise GuardianSettingError(f"CONSENT_VENDORS: {fields[0]}'s privacy policy must be a "
                                       f"web address, not {fields[1]!r}")
        purposes = (fields[2],) if len(fields) == 3 else VENDOR_PURPOSES
        if not set(purposes) <= set(VENDOR_PURPOSES):
            raise GuardianSettingError(f"CONSENT_VENDORS: {fields[0]}'s purpose must be one of "
                                       f"{', '.join(VENDOR_PURPOSES)}, not {fields[2]!r}")
        vendors.append(Vendor(fields[0], fields[1], purposes))
    return tuple(vendors)


@dataclass(frozen=True)
class GuardianSettings:
    """The deployment's choices for guardian consent."""

    response_days: int = 14  # an unanswered request expires, and its contact details go, after this
    vendors: tuple[Vendor, ...] = ()
    policy_url: str = "https://library.example.org/privacy"
    vendor_method: VendorMethod = VendorMethod.SEPARATE_TICK

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> GuardianSettings:
        """Read GUARDIAN_RESPONSE_DAYS, VENDORS, POLICY_URL and GUARDIAN_VENDOR_METHOD from the
        application's settings; a value the service cannot use raises GuardianSettingError."""
        method = config.get("GUARDIAN_VENDOR_METHOD", VendorMethod.SEPARATE_TICK.value)
        if method not in set(VendorMethod):
            raise GuardianSettingError(
                f"CONSENT_GUARDIAN_VENDOR_METHOD must be separate_tick or id_check, not {method!r}")
        days = config.get("GUARDIAN_RESPONSE_DAYS", cls.response_days)
        if not isinstance(days, int) or days < 1:
            raise GuardianSettingError(
                f"CONSENT_GUARDIAN_RESPONSE_DAYS must be a whole number of days, not {days!r}")
        return cls(response_days=days, vendors=parse_vendors(config.get("VENDORS", "")),
                   policy_url=config.get("POLICY_URL", cls.policy_url),
                   vendor_method=VendorMethod(method))

    def vendors_for(self, purpose: str) -> list[Vendor]:
        return [vendor for vendor in self.vendors if purpose in vendor.purposes]


def guardian_purposes(catalog: Catalog, birth_date: date | None, today: date) -> list[Purpose]:
    """The purposes a guardian decides for a patron born on `birth_date`, on `today`: those whose
    guardian age the patron is still under (13 for most, 17 for a minor's card), in GUARDIAN_ORDER.
    Empty from the 17th birthday, and for a patron without a birth date (treated as an adult)."""
    if birth_date is None:
        return []
    age = age_on(birth_date, today)
    by_key = {purpose.key: purpose for purpose in catalog}
    return [by_key[key] for key in GUARDIAN_ORDER
            if key in by_key and age < by_key[key].guardian_opt_in_under]
