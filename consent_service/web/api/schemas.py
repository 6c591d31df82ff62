"""The API's request and response shapes (marshmallow), which are also its OpenAPI schemas."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from consent_service.domain.ledger import Actor, Decision
from consent_service.domain.purposes import PurposeKey
from consent_service.domain.text import UnsafeTextError, clean_text
from consent_service.services.patron_import import COLUMNS

BATCH_LIMIT = 1000  # patrons in one batch
FEED_LIMIT = 1000  # events in one page of the feed
FEED_DEFAULT = 100
PURPOSES = [str(key) for key in PurposeKey]
KEY_LENGTH = 64


class SafeString(fields.String):
    """Text from outside: in Unicode NFC and free of control characters and bidi overrides
    (`clean_text`, the one rule), trimmed; a refused character is a field error naming it."""

    def __init__(self, *, multiline: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.multiline = multiline

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return clean_text(text.strip(), field=self.name or "text", multiline=self.multiline)
        except UnsafeTextError as exc:
            raise ValidationError(str(exc)) from None


def _patron_fields() -> dict[str, fields.Field]:
    """The import's columns but the card number, as JSON strings: left out, a field keeps its
    value; empty or null, it is cleared. Values are checked by the import's own rules."""
    described = {
        "email": "Normalised and checked as the import does; an email decision belongs to it.",
        "birth_date": "YYYY-MM-DD.",
        "preferred_language": "`en` or `es` (empty: `en`).",
        "status": "`active` or `inactive` (empty: `active`).",
        "guardian_card_number": "Links this patron to a guardian: a patron in the database or "
                                "in the same batch. Links are only ever added.",
        "guardian_email": "Links a guardian known only by an address.",
    }
    return {name: fields.String(allow_none=True, metadata={"description": described[name]}
                                if name in described else {})
            for name in COLUMNS if name != "card_number"}


PatronFieldsSchema = Schema.from_dict(_patron_fields(), name="PatronFieldsSchema")
PatronFieldsSchema.__doc__ = ("A patron record for `PUT /patrons/{card_number}`: the patron import's "
                              "columns, with the same rules.")


class PatronRecordSchema(PatronFieldsSchema):  # type: ignore[valid-type, misc]
    """A patron record in a batch: the import's columns, `card_number` required."""

    card_number = fields.String(required=True)


class PatronBatchSchema(Schema):
    """Up to 1000 patron records, written all or none."""

    patrons = fields.List(fields.Nested(PatronRecordSchema), required=True,
                          validate=validate.Length(min=1, max=BATCH_LIMIT))


class UpsertedPatronSchema(Schema):
    card_number = fields.String()
    patron_id = fields.String(metadata={"description": "The patron's opaque public id."})
    outcome = fields.String(metadata={"description": "`created`, `updated` or `unchanged`."})


class ErasedPatronSchema(Schema):
    patron_id = fields.String(metadata={"description": "The tombstone's new opaque id (the old "
                                                       "one, and its links, no longer work)."})
    erased_at = fields.DateTime()
    removed = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={
        "description": "What was removed besides the record's own fields, by kind, with counts."})


class PatronBatchResultSchema(Schema):
    patrons = fields.List(fields.Nested(UpsertedPatronSchema))


class DecisionInForceSchema(Schema):
    scope = fields.String(metadata={"description": "`patron` (on the record) or `address` (an "
                                                   "email decision, whoever at the address made it)."})
    purpose = fields.String()
    topic = fields.String(allow_none=True, metadata={"description": "null: the whole purpose."})
    decision = fields.String()
    actor = fields.String()
    source = fields.String()
    occurred_at = fields.DateTime()
    recorded_at = fields.DateTime()


class PatronDecisionsSchema(Schema):
    patron_id = fields.String()
    decisions = fields.List(fields.Nested(DecisionInForceSchema))


class DecisionRequestSchema(Schema):
    """A decision to record for one patron, named by card number or by opaque id."""

    card_number = SafeString(validate=validate.Length(min=1, max=KEY_LENGTH))
    patron_id = SafeString(validate=validate.Length(min=1, max=KEY_LENGTH))
    purpose = fields.String(required=True, validate=validate.OneOf(PURPOSES))
    topic = SafeString(allow_none=True, load_default=None, validate=validate.Length(max=KEY_LENGTH),
                       metadata={"description": "An email topic; null or left out: the whole "
                                                "purpose."})
    decision = fields.String(required=True, validate=validate.OneOf([d.value for d in Decision]))
    occurred_at = fields.AwareDateTime(required=True, metadata={
        "description": "When the person decided, at the source, with its UTC offset."})
    actor = fields.String(load_default=Actor.SYSTEM.value,
                          validate=validate.OneOf([a.value for a in Actor]),
                          metadata={"description": "Who decided; `system` when left out."})
    actor_ref = SafeString(allow_none=True, load_default=None, validate=validate.Length(max=64),
                           metadata={"description": "The actor's id in the calling system."})
    source_detail = SafeString(allow_none=True, load_default=None,
                               validate=validate.Length(max=200), metadata={
                                   "description": "Where in the calling system it was made "
                                                  "(kept as evidence; the source is `api`)."})
    note = SafeString(multiline=True, allow_none=True, load_default=None,
                      validate=validate.Length(max=1000))

    @validates_schema
    def _one_patron(self, data: dict[str, Any], **kwargs: Any) -> None:
        if ("card_number" in data) == ("patron_id" in data):
            raise ValidationError("give either card_number or patron_id", "card_number")


class RecordedDecisionSchema(Schema):
    recorded = fields.Boolean(metadata={"description": "False: it repeats the decision in force "
                                                       "and is not newer; nothing was written."})
    event_id = fields.String(allow_none=True)
    effective = fields.Boolean(allow_none=True, metadata={
        "description": "False for an attempt that cannot take effect (a child's own opt-in)."})
    changed = fields.Boolean(metadata={"description": "Whether what is in force changed (a late "
                                                      "event is recorded but changes nothing)."})
    patron_id = fields.String()
    purpose = fields.String()
    topic = fields.String(allow_none=True)
    decision = fields.String()
    actor = fields.String()
    occurred_at = fields.DateTime()


class EligibilityQuerySchema(Schema):
    card_number = SafeString(validate=validate.Length(min=1, max=KEY_LENGTH))
    patron_id = SafeString(validate=validate.Length(min=1, max=KEY_LENGTH))
    purpose = fields.String(required=True, validate=validate.OneOf(PURPOSES))
    topic = SafeString(validate=validate.Length(max=KEY_LENGTH),
                       metadata={"description": "An email topic; left out: all library email."})

    @validates_schema
    def _one_patron(self, data: dict[str, Any], **kwargs: Any) -> None:
        if ("card_number" in data) == ("patron_id" in data):
            raise ValidationError("give either card_number or patron_id", "card_number")


class EligibilitySchema(Schema):
    allowed = fields.Boolean()
    reason = fields.String(allow_none=True, metadata={
        "description": "Why not, when not allowed: no_email, no_postal_address, opted_out, "
                       "not_opted_in, guardian_consent_required, address_suppressed, "
                       "address_undeliverable or inactive."})
    patron_id = fields.String()
    purpose = fields.String()
    topic = fields.String(allow_none=True)


class EventsQuerySchema(Schema):
    after = fields.String(metadata={"description": "A `next` cursor from an earlier page; left "
                                                   "out: from the first event."})
    limit = fields.Integer(load_default=FEED_DEFAULT,
                           validate=validate.Range(min=1, max=FEED_LIMIT))


class FeedEventSchema(Schema):
    id = fields.String(metadata={"description": "The event's id (`event_id` when recorded "
                                                "through the API); not a cursor."})
    patron_id = fields.String(allow_none=True, metadata={
        "description": "The opaque patron id; null for an address no patron has."})
    scope = fields.String(metadata={"description": "`address` for an email decision, which is in "
                                                   "force for every patron at the address."})
    purpose = fields.String()
    topic = fields.String(allow_none=True)
    decision = fields.String()
    source = fields.String()
    source_detail = fields.String(allow_none=True, metadata={
        "description": "where the decision came from, in the words of whoever gave it: a "
                       "library's own label, the ILS field, or the API caller's"})
    actor = fields.String()
    effective = fields.Boolean()
    occurred_at = fields.DateTime()
    recorded_at = fields.DateTime()


class EventsPageSchema(Schema):
    events = fields.List(fields.Nested(FeedEventSchema))
    next = fields.String(allow_none=True, metadata={
        "description": "Pass as `after` for the next page (the same cursor when nothing is new). "
                       "Opaque: give it back as it is."})
    has_more = fields.Boolean()


class ContactsQuerySchema(Schema):
    purpose = fields.String(required=True, validate=validate.OneOf(PURPOSES))
    topic = SafeString(validate=validate.Length(max=KEY_LENGTH))
