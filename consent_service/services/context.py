"""The configured collaborators every use case may need: the catalog, keys, signer, settings."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from consent_service.domain.addresses import keyed_address_mac
from consent_service.domain.guardians import GuardianSettings
from consent_service.domain.purposes import Catalog
from consent_service.domain.tokens import LinkKind, LinkSigner


@dataclass(frozen=True)
class ServiceContext:
    """The configured collaborators every use case may need, built once per application."""

    catalog: Catalog
    address_secret: bytes
    signer: LinkSigner
    public_base_url: str
    timezone: str = "America/Denver"  # the library's day: ages and "today" are taken here
    library_name: str = "Example County Library"
    library_postal_address: str = "Example County Library, 100 Main St, Castle Rock, CO 80104"
    mail_from: str = "Library <library@example.org>"
    library_email: str = "privacy@library.example.org"  # named in consent receipts
    library_phone: str = ""
    jurisdiction: str = "US-CO"  # the law a consent receipt is given under
    guardians: GuardianSettings = field(default_factory=GuardianSettings)
    # Topic keys seen configured: topics are only ever added, so each is looked up once per
    # process (services.decisions.checked_topic).
    known_topics: set[str] = field(default_factory=set, compare=False, repr=False)
    _address_mac: hmac.HMAC = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_address_mac", keyed_address_mac(self.address_secret))

    def address_key(self, normalized_email: str) -> str:
        """`domain.addresses.address_key` with this library's secret, keyed once (an import
        keys every row's address: 4 µs an address instead of 2)."""
        mac = self._address_mac.copy()
        mac.update(normalized_email.encode("utf-8"))
        return mac.hexdigest()

    def today(self, now: datetime) -> date:
        """The library's date at `now`: ages and eligibility are judged on it, not on UTC's date."""
        return now.astimezone(ZoneInfo(self.timezone)).date()

    def linker(self, kind: LinkKind, topic: str | None = None) -> Callable[[str], str]:
        """`link(kind, public_id, topic)` as a function of the public id alone, for many links
        (an export's rows): the same URLs, signed by `LinkSigner.signer`."""
        sign, prefix = self.signer.signer(kind, topic), f"{self.public_base_url}/{kind.value}/"
        return lambda patron_public_id: prefix + sign(patron_public_id)

    def link(self, kind: LinkKind, patron_public_id: str, topic: str | None = None,
             ref: str | None = None) -> str:
        """An absolute URL of a signed link of this kind."""
        token = self.signer.sign(kind, patron_public_id, topic, ref)
        return f"{self.public_base_url}/{kind.value}/{token}"
