"""API views about the ledger: record a decision, the feed of events, contact exports."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView
from flask.wrappers import Response

from consent_service import runtime
from consent_service.domain.ledger import Actor, Decision
from consent_service.extensions import db
from consent_service.services.api_exports import export_contacts_file
from consent_service.services.api_idempotency import Answer
from consent_service.services.api_keys import Scope
from consent_service.services.api_ledger import (
    ReportedDecision,
    events_after,
    record_reported_decision,
)
from consent_service.services.api_patrons import find_patron
from consent_service.web.api.common import (
    answer_once,
    blp,
    current_client,
    query_arguments,
    scope_required,
    writes,
)
from consent_service.web.api.schemas import (
    ContactsQuerySchema,
    DecisionRequestSchema,
    EventsPageSchema,
    EventsQuerySchema,
    RecordedDecisionSchema,
)

CSV_RESPONSE = {"type": "string", "format": "binary"}


@blp.route("/decisions", tags=["decisions"])
class Decisions(MethodView):
    @scope_required(Scope.CONSENTS_WRITE)
    @writes
    @blp.arguments(DecisionRequestSchema)
    @blp.response(201, RecordedDecisionSchema, description="The decision was recorded.")
    @blp.alt_response(200, schema=RecordedDecisionSchema, success=True, description=(
        "Nothing was written: the decision repeats the one in force and is not newer."))
    @blp.alt_response(404, response="NOT_FOUND")
    def post(self, body: dict[str, Any]) -> Response:
        """Record a decision a patron made

        Recorded in the ledger with source `api`, the body's `occurred_at` (when the person
        decided, with its offset; not in the future) and actor (`system` when left out), as
        every other decision is: the latest `occurred_at` is in force, so a late event is
        recorded without overturning a newer one; an email decision is in force for every
        patron at the address; a child's own opt-in does not count. 201 when an event was
        written, 200 when the decision repeats what is in force.
        """
        evidence = {name: body[name] for name in ("source_detail", "note") if body.get(name)}
        reported = ReportedDecision(
            purpose=body["purpose"], decision=Decision(body["decision"]),
            occurred_at=body["occurred_at"], topic=body["topic"] or None,
            actor=Actor(body["actor"]), actor_ref=body["actor_ref"] or None, evidence=evidence)

        def work() -> Answer:
            patron = find_patron(db.session, card_number=body.get("card_number"),
                                 patron_id=body.get("patron_id"))
            done = record_reported_decision(db.session, runtime.context(), patron, reported,
                                            api_key_prefix=current_client().prefix,
                                            now=runtime.now())
            return Answer(201 if done.recorded else 200, RecordedDecisionSchema().dump(done))

        return answer_once(work)


@blp.route("/events", tags=["events"])
class Events(MethodView):
    @scope_required(Scope.CONSENTS_READ)
    @query_arguments(EventsQuerySchema)
    @blp.response(200, EventsPageSchema)
    def get(self, query: dict[str, Any]) -> Any:
        """The ledger's events, in a stable order, for downstream systems

        Every consent event in the order it was recorded, `limit` at a time (100 by default, at
        most 1000). Pass the answer's `next` as `after` to get the events recorded since; an
        empty page gives back the same cursor. Events are never changed, and an event appears
        only once every write that could come before it has finished (a long import holds the
        feed back until it ends), so a cursor stays valid and nothing is skipped. Patrons appear
        only by their opaque id, never by card number or address.
        """
        return events_after(db.session, query.get("after"), query["limit"])


@blp.route("/exports/contacts", tags=["exports"])
class ContactExport(MethodView):
    @scope_required(Scope.EXPORTS_READ)
    @query_arguments(ContactsQuerySchema)
    @blp.response(200, CSV_RESPONSE, content_type="text/csv",
                  description="The CSV of `flask export contacts`; X-Export-Sha256 is its digest.")
    def get(self, query: dict[str, Any]) -> Response:
        """The patrons who may be contacted for a purpose (and topic), as CSV

        The same file and rules as `flask export contacts`: email purposes give one row per
        address (`email,first_name,last_name,preferred_language,patron_id,unsubscribe_url,
        preferences_url`), others one row per patron (`patron_id,first_name,last_name,email,
        street,city,state,postal_code`). Every export is recorded with its manifest.
        """
        client = current_client()
        exported = export_contacts_file(
            db.session, runtime.context(), purpose=query["purpose"],
            topic=query.get("topic") or None, created_by=f"api:{client.name}", now=runtime.now(),
            chunk_size=current_app.config["EXPORT_CHUNK_SIZE"])
        response = Response(exported.chunks(), mimetype="text/csv")
        response.headers.set("Content-Disposition", "attachment", filename=exported.download_name)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Export-Id"] = str(exported.manifest_id)
        response.headers["X-Export-Rows"] = str(exported.row_count)
        response.headers["X-Export-Sha256"] = exported.sha256
        return response
