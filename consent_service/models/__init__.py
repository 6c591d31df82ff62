"""The database tables, one module per area; every table is imported here, so that the metadata
(and migrations) know them all, and callers import from `consent_service.models`."""

from consent_service.models.access import PatronAccess
from consent_service.models.api import ApiKey, IdempotentResponse
from consent_service.models.columns import BigId, UTCDateTime
from consent_service.models.erasure import ErasureRequest
from consent_service.models.exports import ExportedPatron, ExportManifest
from consent_service.models.ledger import (
    AddressDecision,
    AddressSuppression,
    ConsentEvent,
    LedgerChainHead,
    PatronDecision,
    UndeliverableAddress,
    UnsubscribeFeedback,
)
from consent_service.models.operations import (
    OutboxMessage,
    RateLimitCounter,
    SendGridEventReceipt,
    SuppressionSyncJob,
    WebhookBatch,
)
from consent_service.models.patrons import (
    FamilyRequest,
    GuardianLink,
    GuardianRequest,
    Patron,
    PolicyNotice,
    PolicyVersion,
    Topic,
)
from consent_service.models.staff import StaffUser

__all__ = [
    "AddressDecision",
    "AddressSuppression",
    "ApiKey",
    "BigId",
    "ConsentEvent",
    "ErasureRequest",
    "ExportManifest",
    "ExportedPatron",
    "FamilyRequest",
    "GuardianLink",
    "GuardianRequest",
    "IdempotentResponse",
    "LedgerChainHead",
    "OutboxMessage",
    "Patron",
    "PatronAccess",
    "PatronDecision",
    "PolicyNotice",
    "PolicyVersion",
    "RateLimitCounter",
    "SendGridEventReceipt",
    "StaffUser",
    "SuppressionSyncJob",
    "Topic",
    "UTCDateTime",
    "UndeliverableAddress",
    "UnsubscribeFeedback",
    "WebhookBatch",
]
