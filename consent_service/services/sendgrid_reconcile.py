"""Reconciliation: read SendGrid's suppression lists, record what the ledger missed, queue pushes
for what SendGrid missed, and say how far apart the two were."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service.domain.addresses import InvalidEmailError, normalize_email
from consent_service.domain.ledger import (
    WHOLE_PURPOSE,
    Actor,
    Decision,
    Ruling,
    Source,
    fold,
    resolve,
)
from consent_service.domain.purposes import EMAIL_PURPOSE
from consent_service.domain.sendgrid_events import Suppression
from consent_service.models import (
    AddressDecision,
    AddressSuppression,
    ConsentEvent,
    Patron,
    SuppressionSyncJob,
    UndeliverableAddress,
)
from consent_service.sendgrid.suppressions import SuppressionClient
from consent_service.services.context import ServiceContext
from consent_service.services.decisions import queue_suppression_sync
from consent_service.services.sendgrid_addresses import (
    address_state,
    desired_for,
    mark_undeliverable,
    record_email_decision,
    suppress_address,
    topic_groups,
)

# A SendGrid entry and the ledger event it came from (or went to) may be this far apart in time.
SAME_MOMENT = timedelta(minutes=2)

MISSED_GLOBAL = "global unsubscribes"
MISSED_GROUP = "group unsubscribes"
MISSED_SPAM = "spam reports"
MISSED_BOUNCE = "bounces"
SENDGRID_MISSING_GLOBAL = "global unsubscribes missing"
SENDGRID_STALE_GLOBAL = "global unsubscribes to remove"
SENDGRID_MISSING_GROUP = "group suppressions missing"
SENDGRID_STALE_GROUP = "group suppressions to remove"


@dataclass
class DriftReport:
    """How far SendGrid and the ledger were apart, by kind. `missed`: SendGrid entries the ledger
    lacked, now recorded; `behind`: entries SendGrid lacked or kept against a newer decision, now
    queued for a push. The rest is for information and is not drift."""

    missed: Counter[str] = field(default_factory=Counter)
    behind: Counter[str] = field(default_factory=Counter)
    queued: int = 0
    no_email: int = 0  # addresses SendGrid is behind on, with no address known to push to
    unreadable: int = 0  # SendGrid entries whose address does not parse
    unmapped_groups: Counter[int] = field(default_factory=Counter)  # group id -> entries

    @property
    def total(self) -> int:
        return sum(self.missed.values()) + sum(self.behind.values())

    def lines(self) -> list[str]:
        """The report as printed by `flask sendgrid reconcile`."""
        if not self.total:
            lines = ["no drift: SendGrid and the ledger agree"]
        else:
            lines = [f"drift: {self.total}"]
            lines += [f"  recorded from SendGrid, {kind}: {n}"
                      for kind, n in sorted(self.missed.items())]
            lines += [f"  pushed to SendGrid, {kind}: {n}"
                      for kind, n in sorted(self.behind.items())]
            lines.append(f"  addresses queued for a push: {self.queued}")
        if self.no_email:
            lines.append(f"addresses with no known email to push to: {self.no_email}")
        if self.unreadable:
            lines.append(f"SendGrid entries with an unreadable address, skipped: {self.unreadable}")
        for group_id, n in sorted(self.unmapped_groups.items()):
            lines.append(f"group {group_id} is mapped to no topic: {n} suppression(s) not compared "
                         "(map it with `flask topics add KEY --name NAME --sendgrid-group ID`)")
        return lines


@dataclass
class _SendGridState:
    emails: dict[str, str] = field(default_factory=dict)  # address key -> email
    global_unsubscribes: dict[str, datetime] = field(default_factory=dict)
    group_suppressions: dict[str, dict[int, datetime]] = field(default_factory=dict)
    spam_reports: dict[str, datetime] = field(default_factory=dict)
    bounces: dict[str, tuple[datetime, str]] = field(default_factory=dict)


READ_STEPS = ("group suppressions", "global unsubscribes", "spam reports", "bounces")


def reconcile_suppressions(session: Session, ctx: ServiceContext, client: SuppressionClient, *,
                           now: datetime,
                           on_read: Callable[[str, int], None] | None = None) -> DriftReport:
    """Bring the ledger and SendGrid back into agreement, and commit; then push the queued jobs.

    Reads every group suppression (for the groups mapped to topics), global unsubscribe, spam report
    and bounce. An entry the ledger cannot explain (no opt-out in force for it then, and none
    recorded at that moment) is recorded as it happened at SendGrid: a decision from source
    `sendgrid_reconcile` at SendGrid's `created` time, so a newer decision of ours still wins; spam
    reports also suppress the address, bounces mark it undeliverable. Then every address whose
    SendGrid entries differ from the state in force is queued for a push. Entries we recorded or
    pushed are explained the next time, so a second run finds no drift.

    `on_read` is told when each of SendGrid's lists (`READ_STEPS`) has been read, with how many
    entries it held, for a progress bar (SendGrid gives no totals before the reading).
    """
    report = DriftReport()
    groups = topic_groups(session)
    topic_of = {group_id: topic for topic, group_id in groups.items()}
    session.commit()  # no transaction stays open while SendGrid is read
    seen = _read_sendgrid(ctx, client, topic_of, report, on_read or (lambda step, n: None))

    def at(created: datetime) -> datetime:
        return min(created, now)  # SendGrid's clock may run ahead of ours

    def record(address: str, topic: str | None, created: datetime, listed: str) -> None:
        record_email_decision(
            session, ctx, email=seen.emails[address], address=address, decision=Decision.OPT_OUT,
            topic=topic, occurred_at=at(created), source=Source.SENDGRID_RECONCILE, patron=None,
            evidence={"sendgrid_list": listed}, sg_event_id=None, now=now)

    for address, created in seen.spam_reports.items():
        row = session.get(AddressSuppression, address)
        if row is None or row.suppressed_at < created - SAME_MOMENT:
            suppress_address(session, address, Suppression.SPAM_REPORT.value, at(created))
            record(address, None, created, "spam_reports")
            report.missed[MISSED_SPAM] += 1
    for address, (created, reason) in seen.bounces.items():
        if session.get(UndeliverableAddress, address) is None:
            mark_undeliverable(session, address, reason, at(created))
            report.missed[MISSED_BOUNCE] += 1
    for address, created in seen.global_unsubscribes.items():
        if not _explained(session, address, None, created):
            record(address, None, created, "global_unsubscribes")
            report.missed[MISSED_GLOBAL] += 1
    for address, by_group in seen.group_suppressions.items():
        for group_id, created in sorted(by_group.items()):
            if not _explained(session, address, topic_of[group_id], created):
                record(address, topic_of[group_id], created, "group_suppressions")
                report.missed[MISSED_GROUP] += 1

    _queue_pushes(session, seen, groups, report, now)
    session.commit()
    return report


def _read_sendgrid(ctx: ServiceContext, client: SuppressionClient, topic_of: dict[int, str],
                   report: DriftReport, on_read: Callable[[str, int], None]) -> _SendGridState:
    seen = _SendGridState()
    counted = 0

    def address_of(raw: str) -> str | None:
        nonlocal counted
        counted += 1
        try:
            email = normalize_email(raw, strict=False)
        except InvalidEmailError:
            report.unreadable += 1
            return None
        address = ctx.address_key(email)
        seen.emails.setdefault(address, email)
        return address

    def done(step: str) -> None:
        nonlocal counted
        on_read(step, counted)
        counted = 0

    for row in client.group_suppressions():
        if row.group_id not in topic_of:
            report.unmapped_groups[row.group_id or 0] += 1
            counted += 1
        elif (address := address_of(row.email)) is not None:
            by_group = seen.group_suppressions.setdefault(address, {})
            by_group[row.group_id] = min(row.created, by_group.get(row.group_id, row.created))
    done(READ_STEPS[0])
    for row in client.global_unsubscribes():
        if (address := address_of(row.email)) is not None:
            seen.global_unsubscribes[address] = row.created
    done(READ_STEPS[1])
    for row in client.spam_reports():
        if (address := address_of(row.email)) is not None:
            latest = seen.spam_reports.get(address, row.created)
            seen.spam_reports[address] = max(row.created, latest)
    done(READ_STEPS[2])
    for row in client.bounces():
        if (address := address_of(row.email)) is not None:
            seen.bounces.setdefault(address, (row.created, row.reason))
    done(READ_STEPS[3])
    return seen


def _explained(session: Session, address: str, topic: str | None, created: datetime) -> bool:
    """Whether the ledger accounts for a SendGrid entry made at `created`: an opt-out in force now;
    or an opt-out occurring at that moment (a webhook's event time and SendGrid's list time may
    differ a little); or an opt-out in force in the ledger as it stood then (the entry may be our
    own push). Otherwise the entry is an unsubscribe we never heard of. When unsure, this says no:
    recording an opt-out too many is safer than erasing an unsubscribe."""
    if _opts_out(address_state(session, address), topic):
        return True
    topics = [WHOLE_PURPOSE] if topic is None else [WHOLE_PURPOSE, topic]
    events = session.scalars(select(ConsentEvent).where(
        ConsentEvent.address_key == address, ConsentEvent.purpose == EMAIL_PURPOSE,
        ConsentEvent.topic.in_(topics), ConsentEvent.effective.is_(True))).all()
    if any(event.decision == Decision.OPT_OUT.value
           and abs(event.occurred_at - created) <= SAME_MOMENT for event in events):
        return True
    known_then = fold(((event.purpose, event.topic), Ruling(
        Decision(event.decision), event.occurred_at, Actor(event.actor), str(event.id)))
        for event in events if event.recorded_at <= created)
    return _opts_out(known_then, topic)


def _opts_out(state: dict[tuple[str, str], Ruling], topic: str | None) -> bool:
    """An opt-out of all email (which covers every group), or of the topic, is in force."""
    whole = state.get((EMAIL_PURPOSE, WHOLE_PURPOSE))
    if whole is not None and whole.decision is Decision.OPT_OUT:
        return True
    ruling = resolve(state, EMAIL_PURPOSE, topic) if topic is not None else None
    return ruling is not None and ruling.decision is Decision.OPT_OUT


def _queue_pushes(session: Session, seen: _SendGridState, groups: dict[str, int],
                  report: DriftReport, now: datetime) -> None:
    """Queue a push for every address whose SendGrid entries differ from its state in force."""
    decided = set(session.scalars(select(AddressDecision.address_key).where(
        AddressDecision.purpose == EMAIL_PURPOSE).distinct()))
    addresses = sorted(decided | set(seen.global_unsubscribes) | set(seen.group_suppressions))
    desired = desired_for(session, addresses, groups)
    behind: list[str] = []
    for address in addresses:
        want = desired[address]
        listed_global = address in seen.global_unsubscribes
        listed_groups = seen.group_suppressions.get(address, {})
        kinds = []
        if want.global_unsubscribe is True and not listed_global:
            kinds.append(SENDGRID_MISSING_GLOBAL)
        elif want.global_unsubscribe is False and listed_global:
            kinds.append(SENDGRID_STALE_GLOBAL)
        for group_id, suppressed in want.groups:
            if suppressed and group_id not in listed_groups:
                kinds.append(SENDGRID_MISSING_GROUP)
            elif not suppressed and group_id in listed_groups:
                kinds.append(SENDGRID_STALE_GROUP)
        if kinds:
            report.behind.update(kinds)
            behind.append(address)
    emails = _known_emails(session, [a for a in behind if a not in seen.emails])
    for address in behind:
        email = seen.emails.get(address) or emails.get(address)
        if email is None:
            report.no_email += 1
            continue
        queue_suppression_sync(session, address, email, now)
        report.queued += 1


def _known_emails(session: Session, addresses: list[str]) -> dict[str, str]:
    """An email for each address key, from a patron at it or an earlier sync job for it."""
    found: dict[str, str] = {}
    for start in range(0, len(addresses), 500):
        chunk = addresses[start:start + 500]
        for address, email in session.execute(select(Patron.address_key, Patron.email).where(
                Patron.address_key.in_(chunk), Patron.email.is_not(None))):
            found.setdefault(address, email)
        for address, email in session.execute(select(
                SuppressionSyncJob.address_key, SuppressionSyncJob.email).where(
                SuppressionSyncJob.address_key.in_(chunk), SuppressionSyncJob.email.is_not(None))):
            found.setdefault(address, email)
    return found
