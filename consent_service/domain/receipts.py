"""Consent receipts: one recorded decision as a receipt after the Kantara Initiative Consent Receipt
Specification v1.1 (KI-CR-v1.1.0).

Fields used, as the specification and its JSON example define them
(https://kantarainitiative.org/file-downloads/consent-receipt-specification-v1-1-0/; the v1.1
example receipt at https://hackmd.io/@VNeqf5SwTyOuKC03vs0EIw/BkRgJ-8rD): `version`,
`jurisdiction`, `consentTimestamp` (seconds since 1970, UTC), `collectionMethod`,
`consentReceiptID` (a UUID), `language`, `piiPrincipalId`, `piiControllers` (`piiController`,
`contact`, `address`, `email`, `phone`), `policyUrl`, `services` (`service`,
`purposes`: `purpose`, `purposeCategory`, `consentType`, `piiCategory`, `primaryPurpose`,
`termination`, `thirdPartyDisclosure`, `thirdPartyName`), `sensitive`, `spiCat`. Purpose and PII
categories are taken from the specification's appendix lists. `publicKey` is left out: the receipt
is not signed.

Ours, beside them: `policyVersion` (the version in force when the decision was made), `decision`
(`opt_in` or `opt_out`: a receipt also records a withdrawal), `purposeKey`, `topic`, `source`,
`actor`, `effective` (a child's own opt-in is recorded but does not count) and `inForce`.
`piiPrincipalId` is the patron's opaque public id, never a card number or an address.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from consent_service.domain.ledger import Decision, Source, age_on
from consent_service.domain.purposes import CHILD_AGE, Purpose, PurposeKey

RECEIPT_VERSION = "KI-CR-v1.1.0"

COLLECTION_METHODS: Mapping[Source, str] = {
    Source.UNSUBSCRIBE_LINK: "Unsubscribe link in an email from the library",
    Source.ONE_CLICK: "One-click unsubscribe by the person's mail program (RFC 8058)",
    Source.PREFERENCE_CENTER: "The library's online preference center, opened by a signed link",
    Source.GUARDIAN_PAGE: "A parent's or guardian's consent page, opened by a signed link "
                          "(email plus confirmation)",
    Source.STAFF_DESK: "Told to library staff in person",
    Source.STAFF_PHONE: "Told to library staff by phone",
    Source.STAFF_EMAIL: "Written to the library by email, recorded by staff",
    Source.STAFF_PAPER_FORM: "A signed paper form, recorded by staff",
    Source.SENDGRID_WEBHOOK: "An unsubscribe or resubscribe through the library's mail provider "
                             "(SendGrid)",
    Source.SENDGRID_RECONCILE: "The library's mail provider's unsubscribe list (SendGrid)",
    Source.IMPORT: "The library's earlier records, imported",
    Source.API: "Another library system, through the consent service's API",
    Source.GPC: "A Global Privacy Control signal sent by the person's browser",
    Source.ERASURE: "The person's request to erase their data: sharing with vendors withdrawn",
}

# Appendix lists of the specification: purpose categories and PII categories.
PURPOSE_CATEGORIES: Mapping[str, tuple[str, ...]] = {
    PurposeKey.EMAIL_MARKETING: ("6 - Marketing",),
    PurposeKey.POSTAL_MARKETING: ("6 - Marketing",),
    PurposeKey.PHOTO_VIDEO: ("6 - Marketing",),
    PurposeKey.CONTACT_UPDATE: ("8 - Sharing for Operations",),
    PurposeKey.THIRD_PARTY_MODELING: ("9 - Sharing for Marketing",),
    PurposeKey.CHILD_ONLINE_SERVICES: ("1 - Core Function",),
    PurposeKey.CHILD_PROGRAMS: ("1 - Core Function",),
    PurposeKey.MINOR_CARD: ("1 - Core Function",),
}
PII_CATEGORIES: Mapping[str, tuple[str, ...]] = {
    PurposeKey.EMAIL_MARKETING: ("2 - Contact",),
    PurposeKey.POSTAL_MARKETING: ("1 - Biographical", "2 - Contact"),
    PurposeKey.PHOTO_VIDEO: ("1 - Biographical",),
    PurposeKey.CONTACT_UPDATE: ("1 - Biographical", "2 - Contact"),
    PurposeKey.THIRD_PARTY_MODELING: ("1 - Biographical", "2 - Contact", "15 - Behavioral"),
    PurposeKey.CHILD_ONLINE_SERVICES: ("1 - Biographical", "2 - Contact", "5 - Network/Service"),
    PurposeKey.CHILD_PROGRAMS: ("1 - Biographical", "2 - Contact"),
    PurposeKey.MINOR_CARD: ("1 - Biographical", "2 - Contact", "14 - Membership"),
}
CHILD_DATA = "Personal information of a child under 13 (COPPA)"


@dataclass(frozen=True)
class Controller:
    """The library as the PII controller a receipt names (settings CONSENT_LIBRARY_*)."""

    name: str
    postal_address: str
    email: str
    phone: str


@dataclass(frozen=True)
class ReceiptFacts:
    """What a receipt says about one recorded decision."""

    receipt_id: str
    principal_id: str  # the patron's opaque public id
    language: str
    birth_date: date | None
    purpose: Purpose
    topic: str | None
    decision: Decision
    source: Source
    actor: str
    occurred_at: datetime
    effective: bool
    in_force: bool
    policy_version: str | None
    third_parties: Sequence[str]


def receipt_id(secret: bytes, event_id: int) -> str:
    """The receipt id of a ledger event: a UUID made from a keyed hash of the event's id, so that it
    is the same every time it is asked for and cannot be guessed from another receipt's."""
    digest = hmac.new(secret, f"consent-receipt:{event_id}".encode(), hashlib.sha256).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def consent_receipt(facts: ReceiptFacts, *, controller: Controller, jurisdiction: str,
                    policy_url: str) -> dict[str, Any]:
    """The Kantara v1.1 receipt of one decision (see the module's docstring for the fields)."""
    child = (facts.birth_date is not None
             and age_on(facts.birth_date, facts.occurred_at.date()) < CHILD_AGE)
    purpose = facts.purpose
    if facts.decision is Decision.OPT_IN:
        termination = ("Until withdrawn: on the preference center, by an unsubscribe link, or by "
                       "telling library staff")
    else:
        termination = "Withdrawn: stays so until the person allows it again"
    entry: dict[str, Any] = {
        "purpose": purpose.label + (f" (topic: {facts.topic})" if facts.topic else ""),
        "purposeCategory": list(PURPOSE_CATEGORIES.get(purpose.key, ("1 - Core Function",))),
        "consentType": "EXPLICIT",
        "piiCategory": list(PII_CATEGORIES.get(purpose.key, ("1 - Biographical",))),
        "primaryPurpose": True,
        "termination": termination,
        "thirdPartyDisclosure": purpose.discloses_to_vendor,
    }
    if purpose.discloses_to_vendor and facts.third_parties:
        entry["thirdPartyName"] = ", ".join(facts.third_parties)
    return {
        "version": RECEIPT_VERSION,
        "jurisdiction": jurisdiction,
        "consentTimestamp": int(facts.occurred_at.timestamp()),
        "collectionMethod": COLLECTION_METHODS[facts.source],
        "consentReceiptID": facts.receipt_id,
        "language": facts.language,
        "piiPrincipalId": facts.principal_id,
        "piiControllers": [{
            "piiController": controller.name,
            "contact": f"{controller.name} privacy contact",
            "address": {"streetAddress": controller.postal_address},
            "email": controller.email,
            "phone": controller.phone,
        }],
        "policyUrl": policy_url,
        "services": [{"service": f"{controller.name}: communications and privacy choices",
                      "purposes": [entry]}],
        "sensitive": child,
        "spiCat": [CHILD_DATA] if child else [],
        "policyVersion": facts.policy_version,
        "decision": facts.decision.value,
        "purposeKey": purpose.key,
        "topic": facts.topic,
        "source": facts.source.value,
        "actor": facts.actor,
        "occurredAt": facts.occurred_at.isoformat(),
        "effective": facts.effective,
        "inForce": facts.in_force,
    }
