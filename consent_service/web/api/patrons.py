"""API views about patrons: upsert one or a batch, their decisions in force, eligibility."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask.wrappers import Response

from consent_service import runtime
from consent_service.extensions import db
from consent_service.services.api_idempotency import Answer
from consent_service.services.api_keys import Scope
from consent_service.services.api_patrons import (
    decisions_in_force,
    eligibility,
    find_patron,
    find_patron_row,
    upsert_patrons,
)
from consent_service.services.erasure import erase_patron
from consent_service.web.api.common import (
    answer_once,
    blp,
    current_client,
    query_arguments,
    scope_required,
    writes,
)
from consent_service.web.api.schemas import (
    EligibilityQuerySchema,
    EligibilitySchema,
    ErasedPatronSchema,
    PatronBatchResultSchema,
    PatronBatchSchema,
    PatronDecisionsSchema,
    PatronFieldsSchema,
    UpsertedPatronSchema,
)


@blp.route("/patrons/<string:card_number>", tags=["patrons"])
class PatronRecord(MethodView):
    @scope_required(Scope.PATRONS_WRITE)
    @writes
    @blp.arguments(PatronFieldsSchema)
    @blp.response(200, UpsertedPatronSchema, description="The patron was updated, or unchanged.")
    @blp.alt_response(201, schema=UpsertedPatronSchema, description="The patron was created.",
                      success=True)
    def put(self, fields: dict[str, Any], card_number: str) -> Response:
        """Create or update a patron by card number

        The same rules as the patron CSV import (`patrons import`): a field left out keeps its
        value, an empty or null one clears it; names and addresses are checked for control
        characters, email addresses normalised; a guardian named by card must be a patron
        already. Never changes a consent decision. 201 when the patron was created, 200
        otherwise; 422 with the refused fields.
        """

        def work() -> Answer:
            [done] = upsert_patrons(db.session, runtime.context(),
                                    [{**fields, "card_number": card_number}],
                                    now=runtime.now(), batch=False)
            return Answer(201 if done.outcome == "created" else 200,
                          UpsertedPatronSchema().dump(done))

        return answer_once(work)


@blp.route("/patrons:batch", tags=["patrons"])
class PatronBatch(MethodView):
    @scope_required(Scope.PATRONS_WRITE)
    @writes
    @blp.arguments(PatronBatchSchema)
    @blp.response(200, PatronBatchResultSchema)
    def post(self, batch: dict[str, Any]) -> Response:
        """Create or update up to 1000 patrons

        Each record as `PUT /patrons/{card_number}` takes it, with `card_number` in the record.
        All or nothing: when any record is refused, nothing is written and the 422 answer lists
        every refused record by its index (from 0) with its problems by field. A guardian named
        by card may be a patron already or another record of the batch.
        """

        def work() -> Answer:
            done = upsert_patrons(db.session, runtime.context(), batch["patrons"],
                                  now=runtime.now())
            return Answer(200, PatronBatchResultSchema().dump({"patrons": done}))

        return answer_once(work)


@blp.route("/patrons/<string:card_number>/erasure", tags=["patrons"])
class PatronErasure(MethodView):
    @scope_required(Scope.PATRONS_ERASE)
    @writes
    @blp.response(200, ErasedPatronSchema, description="The patron's personal data was erased.")
    @blp.alt_response(404, response="NOT_FOUND")
    def post(self, card_number: str) -> Response:
        """Erase a patron's personal data

        As `patrons erase`: names, email, postal address, birth date and card number are removed
        from the patron and from everywhere else the service keeps them; the record stays,
        inactive, under a new opaque id, with its decisions; the address's keyed hash keeps its
        opt-outs and suppressions in force (a later import or API call with the same address
        cannot mail it), and SendGrid keeps its suppressions. Needs the `patrons:erase` scope;
        the body is an empty JSON object.
        The card number is gone afterwards: asking again answers 404.
        """

        def work() -> Answer:
            patron = find_patron(db.session, card_number=card_number)
            erased = erase_patron(db.session, runtime.context(), patron, requested_by="api",
                                  done_by=f"api:{current_client().prefix}", now=runtime.now())
            return Answer(200, ErasedPatronSchema().dump(
                {"patron_id": erased.public_id, "erased_at": erased.erased_at,
                 "removed": erased.counts}))

        return answer_once(work)


@blp.route("/patrons/<string:card_number>/decisions", tags=["decisions"])
class PatronDecisionsByCard(MethodView):
    @scope_required(Scope.CONSENTS_READ)
    @blp.response(200, PatronDecisionsSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, card_number: str) -> Any:
        """A patron's decisions in force, by card number

        Each decision in force with its source and times: those on the patron's record, and the
        email decisions on their address (whoever at the address made them).
        """
        return decisions_in_force(db.session, find_patron(db.session, card_number=card_number))


@blp.route("/patrons/by-id/<string:patron_id>/decisions", tags=["decisions"])
class PatronDecisionsById(MethodView):
    @scope_required(Scope.CONSENTS_READ)
    @blp.response(200, PatronDecisionsSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, patron_id: str) -> Any:
        """A patron's decisions in force, by opaque patron id

        As by card number, for systems that know patrons only by the id in exports and feeds.
        """
        return decisions_in_force(db.session, find_patron(db.session, patron_id=patron_id))


@blp.route("/eligibility", tags=["eligibility"])
class EligibilityCheck(MethodView):
    @scope_required(Scope.CONSENTS_READ, reads_only=True)
    @query_arguments(EligibilityQuerySchema)
    @blp.response(200, EligibilitySchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, query: dict[str, Any]) -> Any:
        """May the library contact or use this patron for a purpose (and topic)?

        The one eligibility function the exports and staff pages ask, on the library's date:
        `allowed`, and when not, one `reason` code. Name the patron by `card_number` or by
        `patron_id`.
        """
        patron = find_patron_row(db.session, card_number=query.get("card_number"),
                                 patron_id=query.get("patron_id"))
        return eligibility(db.session, runtime.context(), patron, purpose=query["purpose"],
                           topic=query.get("topic") or None, now=runtime.now())
