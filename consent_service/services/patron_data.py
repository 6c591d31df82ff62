"""A patron's data: everything the service holds about one person, for them (or a child's guardian)
to download, and a consent receipt for each decision of theirs.

What is the person's and what is not (nothing about anyone else appears):

- Their record, every ledger event made on their record (with its evidence: the network and
  browser of their own clicks, staff notes about them, the policy version in force), the feedback
  they wrote, their guardian links (the other person by first name or a masked address only),
  guardian requests and family requests about them, the exports they were in (date, purpose,
  topic: not who ran it nor anyone else in the file), when staff opened their record (not who),
  the mail the library queued to them (subject and status), and the policy notices they were sent.
- Evidence that is someone else's is left out even from the person's own events: a guardian's
  network, browser, typed name and link on a child's record, and the staff member's address on a
  desk entry (the entry says "staff").
- Email decisions belong to the address, so a decision in force on their address that someone
  else made (a household member, or SendGrid for the address) is shown as "a decision on your
  address": purpose, decision, time, source and the kind of actor, with no name, evidence or id,
  and no receipt (a receipt is for the person's own events; another's is a 404).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service.domain import ConsentServiceError
from consent_service.domain.addresses import mask_email
from consent_service.domain.ledger import Actor, Decision, Key, Ruling, Source
from consent_service.domain.receipts import Controller, ReceiptFacts, consent_receipt, receipt_id
from consent_service.models import (
    ConsentEvent,
    ExportedPatron,
    ExportManifest,
    FamilyRequest,
    GuardianLink,
    GuardianRequest,
    OutboxMessage,
    Patron,
    PatronAccess,
    PolicyNotice,
    PolicyVersion,
    UnsubscribeFeedback,
)
from consent_service.services.context import ServiceContext
from consent_service.services.standing import load_standings

# Evidence kept only when the event is the person's own act (actor patron): their own clicks.
OWN_EVIDENCE = frozenset({"ip", "user_agent", "token_id"})
# Evidence never shown: it identifies someone else (a guardian, a staff member).
OTHERS_EVIDENCE = frozenset({"typed_name", "guardian_link", "request", "staff"})


class ReceiptNotFoundError(ConsentServiceError):
    """No event of this person's has that receipt id."""


def _time(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _evidence(event: ConsentEvent) -> dict[str, Any]:
    own = event.actor == Actor.PATRON.value
    return {key: value for key, value in sorted((event.evidence or {}).items())
            if key not in OTHERS_EVIDENCE and (own or key not in OWN_EVIDENCE)}


def _policy_versions(session: Session) -> dict[int, str]:
    return {row.id: row.version for row in session.execute(
        select(PolicyVersion.id, PolicyVersion.version))}


def _own_events(session: Session, patron: Patron) -> list[ConsentEvent]:
    return list(session.scalars(select(ConsentEvent).where(ConsentEvent.patron_id == patron.id)
                                .order_by(ConsentEvent.occurred_at, ConsentEvent.id)))


def _in_force(session: Session, ctx: ServiceContext, patron: Patron,
              events_by_id: dict[int, ConsentEvent]) -> list[dict[str, Any]]:
    standing = load_standings(session, [patron])[patron.id]
    lines: list[dict[str, Any]] = []

    def add(scope: str, state: dict[Key, Ruling]) -> None:
        for (purpose, topic), ruling in sorted(state.items()):
            own = events_by_id.get(int(ruling.event_ref)) if ruling.event_ref else None
            source = None
            if own is not None:
                source = own.source
            elif scope == "address":
                source = session.scalar(select(ConsentEvent.source).where(
                    ConsentEvent.id == int(ruling.event_ref)))
            lines.append({
                "scope": scope, "purpose": purpose, "topic": topic or None,
                "decision": ruling.decision.value, "since": _time(ruling.occurred_at),
                "actor": ruling.actor.value, "source": source, "yours": own is not None,
                "receipt_id": receipt_id(ctx.address_secret, own.id) if own else None,
            })

    add("patron", standing.patron_state)
    add("address", standing.address_state)
    return lines


def patron_data(session: Session, ctx: ServiceContext, patron: Patron, *,
                now: datetime) -> dict[str, Any]:
    """Everything the service holds about `patron` (see the module's rules), as plain JSON values.
    Reads only."""
    events = _own_events(session, patron)
    by_id = {event.id: event for event in events}
    versions = _policy_versions(session)
    feedback = {row.event_id: row for row in session.scalars(select(UnsubscribeFeedback).where(
        UnsubscribeFeedback.event_id.in_(list(by_id) or [0])))}

    def event_line(event: ConsentEvent) -> dict[str, Any]:
        line: dict[str, Any] = {
            "receipt_id": receipt_id(ctx.address_secret, event.id),
            "purpose": event.purpose, "topic": event.topic or None, "decision": event.decision,
            "source": event.source, "actor": event.actor, "occurred_at": _time(event.occurred_at),
            "recorded_at": _time(event.recorded_at), "effective": event.effective,
            "on_your_email_address": event.address_key is not None,
            "policy_version": versions.get(event.policy_version_id or 0),
            "evidence": _evidence(event),
        }
        if event.id in feedback:
            line["feedback"] = {"reason": feedback[event.id].reason_code,
                                "text": feedback[event.id].text,
                                "at": _time(feedback[event.id].created_at)}
        return line

    def other_person(patron_id: int | None, email: str | None) -> str:
        other = session.get(Patron, patron_id) if patron_id is not None else None
        if other is not None:
            return other.first_name or "a library card holder"
        return mask_email(email) if email else "unknown"

    guardians = [{"guardian": other_person(link.guardian_id, link.guardian_email),
                  "linked_at": _time(link.created_at)}
                 for link in session.scalars(select(GuardianLink).where(
                     GuardianLink.child_id == patron.id).order_by(GuardianLink.id))]
    children = [{"child": other_person(link.child_id, None), "linked_at": _time(link.created_at)}
                for link in session.scalars(select(GuardianLink).where(
                    GuardianLink.guardian_id == patron.id).order_by(GuardianLink.id))]
    requests = [{"status": r.status, "sent_to": mask_email(r.to_email) if r.to_email else None,
                 "language": r.language, "created_at": _time(r.created_at),
                 "expires_at": _time(r.expires_at), "answered_at": _time(r.answered_at)}
                for r in session.scalars(select(GuardianRequest).where(
                    GuardianRequest.child_id == patron.id).order_by(GuardianRequest.id))]
    family_requests = [{"kind": r.kind, "status": r.status, "created_at": _time(r.created_at),
                        "done_at": _time(r.done_at)}
                       for r in session.scalars(select(FamilyRequest).where(
                           FamilyRequest.child_id == patron.id).order_by(FamilyRequest.id))]
    exports = [{"date": _time(created_at), "purpose": purpose, "topic": topic}
               for created_at, purpose, topic in session.execute(
                   select(ExportManifest.created_at, ExportManifest.purpose, ExportManifest.topic)
                   .join(ExportedPatron, ExportedPatron.export_id == ExportManifest.id)
                   .where(ExportedPatron.patron_id == patron.id)
                   .order_by(ExportManifest.created_at, ExportManifest.id))]
    views = [{"at": _time(at), "what": what} for at, what in session.execute(
        select(PatronAccess.at, PatronAccess.what).where(PatronAccess.patron_id == patron.id)
        .order_by(PatronAccess.at, PatronAccess.id))]
    mail = [{"created_at": _time(m.created_at), "category": m.category, "template": m.template,
             "subject": m.subject, "status": m.status, "sent_at": _time(m.sent_at)}
            for m in session.scalars(select(OutboxMessage).where(
                OutboxMessage.patron_id == patron.id).order_by(OutboxMessage.id))]
    notices = [{"policy_version": versions.get(n.policy_version_id), "queued_at": _time(n.queued_at)}
               for n in session.scalars(select(PolicyNotice).where(
                   PolicyNotice.patron_id == patron.id).order_by(PolicyNotice.id))]
    return {
        "generated_at": _time(now),
        "controller": {"name": ctx.library_name, "address": ctx.library_postal_address,
                       "email": ctx.library_email, "policy_url": ctx.guardians.policy_url},
        "patron": {
            "patron_id": patron.public_id, "card_number": patron.card_number,
            "ils_id": patron.ils_id, "first_name": patron.first_name, "last_name": patron.last_name,
            "email": patron.email, "birth_date": _date(patron),
            "preferred_language": patron.preferred_language, "street": patron.street,
            "city": patron.city, "state": patron.state, "postal_code": patron.postal_code,
            "status": patron.status, "created_at": _time(patron.created_at),
            "updated_at": _time(patron.updated_at),
        },
        "decisions_in_force": _in_force(session, ctx, patron, by_id),
        "events": [event_line(event) for event in events],
        "guardians": guardians,
        "children": children,
        "guardian_requests": requests,
        "family_requests": family_requests,
        "exports": exports,
        "staff_views": views,
        "mail": mail,
        "policy_notices": notices,
    }


def _date(patron: Patron) -> str | None:
    return patron.birth_date.isoformat() if patron.birth_date else None


def patron_receipt(session: Session, ctx: ServiceContext, patron: Patron, receipt: str, *,
                   now: datetime) -> dict[str, Any]:
    """The consent receipt (domain.receipts, Kantara CR v1.1) of one of `patron`'s own events, by
    its receipt id. Reads only.

    :raise ReceiptNotFoundError: when no event on the patron's record has that id (another
        person's event included: the page answers 404 either way).
    """
    event = next((e for e in _own_events(session, patron)
                  if receipt_id(ctx.address_secret, e.id) == receipt), None)
    if event is None:
        raise ReceiptNotFoundError("no such receipt")
    purpose = ctx.catalog.get(event.purpose)
    standing = load_standings(session, [patron], purposes=[event.purpose])[patron.id]
    key = (event.purpose, event.topic)
    in_force = any(str(event.id) == ruling.event_ref for state in
                   (standing.patron_state, standing.address_state)
                   if (ruling := state.get(key)) is not None)
    version = session.get(PolicyVersion, event.policy_version_id) \
        if event.policy_version_id else None
    facts = ReceiptFacts(
        receipt_id=receipt, principal_id=patron.public_id, language=patron.preferred_language,
        birth_date=patron.birth_date, purpose=purpose, topic=event.topic or None,
        decision=Decision(event.decision), source=Source(event.source), actor=event.actor,
        occurred_at=event.occurred_at, effective=event.effective, in_force=in_force,
        policy_version=version.version if version else None,
        third_parties=[vendor.name for vendor in ctx.guardians.vendors_for(event.purpose)])
    controller = Controller(ctx.library_name, ctx.library_postal_address, ctx.library_email,
                            ctx.library_phone)
    return consent_receipt(facts, controller=controller, jurisdiction=ctx.jurisdiction,
                           policy_url=ctx.guardians.policy_url)
