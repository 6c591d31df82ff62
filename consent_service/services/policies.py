"""Policy versions: publishing one (command and admin page), the version in force, and announcing a
material change to every patron who can be told by email."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from babel.dates import format_date
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consent_service.domain.policies import NoticeSkip, PolicyError, check_effective, notice_skip
from consent_service.domain.text import UnsafeTextError, clean_text
from consent_service.mail.compose import LANGUAGES, MessageCategory, template_language
from consent_service.models import OutboxMessage, Patron, PolicyNotice, PolicyVersion
from consent_service.services.context import ServiceContext
from consent_service.services.outgoing_mail import queue_email
from consent_service.services.standing import load_standings

_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
SUMMARY_LIMIT = 5000
NOTICE_TEMPLATE = "policy_notice"
NOTICE_BATCH = 200  # patrons per transaction of a notice run


@dataclass(frozen=True)
class PolicyLine:
    """A policy version as the command and the admin page list it."""

    version: str
    effective_at: datetime
    material: bool
    summary: str
    summary_es: str
    created_at: datetime
    notices: int  # patrons told of it so far


def parse_effective(text: str, ctx: ServiceContext, *, now: datetime) -> datetime:
    """When a version takes effect, from `YYYY-MM-DD` (the start of that day in the library's time
    zone; today's date means now) or an ISO 8601 time with an offset.

    :raise PolicyError: for anything else.
    """
    text = (text or "").strip()
    try:
        day = date.fromisoformat(text)
    except ValueError:
        day = None
    if day is not None and len(text) == 10:
        if day == ctx.today(now):
            return now
        return datetime.combine(day, time(0), ZoneInfo(ctx.timezone)).astimezone(UTC)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        at = None
    if at is None or at.tzinfo is None or at.utcoffset() is None:
        raise PolicyError(f"the effective date must look like 2027-01-15 (or an ISO 8601 time "
                          f"with an offset), not {text!r}")
    return at.astimezone(UTC)


def publish_policy(session: Session, *, version: str, effective_at: datetime, summary: str,
                   material: bool, now: datetime,
                   summaries: Mapping[str, str] | None = None) -> PolicyVersion:
    """Add a policy version and commit. From `effective_at` every decision records it.

    Rules: a version name is 1-32 letters, digits, `.`, `_` or `-`, used once; the summary (what
    changed, shown on the preference center and in the notice) is 1-5000 characters of clean text,
    and so is each of `summaries` (language -> the summary in it, e.g. `es`; an empty one is left
    out); the effective time is not in the past and is after the latest version's (no back-dating,
    see domain.policies.check_effective).

    :raise PolicyError: naming what is wrong; nothing is written.
    """
    version = (version or "").strip()
    if not _VERSION.match(version):
        raise PolicyError(f"a version is 1-32 letters, digits, '.', '_' or '-', starting with a "
                          f"letter or digit, not {version!r}")
    if session.scalar(select(PolicyVersion.id).where(PolicyVersion.version == version)):
        raise PolicyError(f"policy version {version!r} exists already")
    summary = _summary(summary, "the summary")
    translated = {language: _summary(text, f"the summary in {language!r}")
                  for language, text in (summaries or {}).items() if (text or "").strip()}
    unknown = sorted(set(translated) - set(LANGUAGES))
    if unknown:
        raise PolicyError(f"a summary can be in {', '.join(LANGUAGES)}, not {unknown[0]!r}")
    latest = session.scalar(select(func.max(PolicyVersion.effective_at)))
    check_effective(effective_at, latest=latest, now=now)
    policy = PolicyVersion(version=version, effective_at=effective_at, summary=summary,
                           summaries=translated or None, material=material, created_at=now)
    session.add(policy)
    session.commit()
    return policy


def _summary(text: str, what: str) -> str:
    try:
        cleaned = clean_text((text or "").strip().replace("\r\n", "\n"), field=what,
                             multiline=True)
    except UnsafeTextError as exc:
        raise PolicyError(str(exc)) from None
    if not cleaned:
        raise PolicyError(f"{what} is empty; say in a few lines what changed")
    if len(cleaned) > SUMMARY_LIMIT:
        raise PolicyError(f"{what} is {len(cleaned)} characters; keep it to {SUMMARY_LIMIT}")
    return cleaned


def summary_in(policy: PolicyVersion, language: str) -> str:
    """What changed, in `language` when the version has it, else in English."""
    return (policy.summaries or {}).get(language) or policy.summary


def policy_lines(session: Session) -> list[PolicyLine]:
    """Every policy version, latest effective first, with how many patrons were told of it."""
    told = {version_id: count for version_id, count in session.execute(
        select(PolicyNotice.policy_version_id, func.count()).group_by(
            PolicyNotice.policy_version_id))}
    return [PolicyLine(p.version, p.effective_at, p.material, p.summary,
                       (p.summaries or {}).get("es", ""), p.created_at, told.get(p.id, 0))
            for p in session.scalars(select(PolicyVersion).order_by(
                PolicyVersion.effective_at.desc()))]


def policy_in_force(session: Session, at: datetime) -> PolicyVersion | None:
    """The version in force at `at`: the latest whose effective time is not after it. The one
    rule every decision's stamp and every page use."""
    return session.scalar(select(PolicyVersion).where(PolicyVersion.effective_at <= at)
                          .order_by(PolicyVersion.effective_at.desc()).limit(1))


def next_policy(session: Session, at: datetime) -> PolicyVersion | None:
    """The next version published to take effect after `at`, if any."""
    return session.scalar(select(PolicyVersion).where(PolicyVersion.effective_at > at)
                          .order_by(PolicyVersion.effective_at).limit(1))


@dataclass
class NoticeRun:
    """What a notice run did: patrons looked at, notices queued, the others by reason, and when
    the last queued notice is due to be sent (the rate spreads them out)."""

    version: str
    patrons: int = 0
    queued: int = 0
    skipped: Counter[NoticeSkip] = field(default_factory=Counter)
    last_due: datetime | None = None

    def summary(self) -> str:
        reasons = ", ".join(f"{reason.value} {count}" for reason, count in sorted(
            self.skipped.items()))
        text = (f"policy {self.version}: {self.queued} notice(s) queued, "
                f"{sum(self.skipped.values())} patron(s) skipped" + (f" ({reasons})" if reasons
                                                                      else ""))
        if self.last_due is not None and self.queued:
            text += f"; the outbox sends the last at {self.last_due.isoformat()}"
        return text


def count_patrons(session: Session) -> int:
    """How many patron records a notice run looks at (for its progress bar)."""
    return session.scalar(select(func.count()).select_from(Patron)) or 0


def notify_policy(session: Session, ctx: ServiceContext, version: str, *, now: datetime,
                  rate: float, force: bool = False, batch: int = NOTICE_BATCH,
                  on_patron: Callable[[], None] | None = None) -> NoticeRun:
    """Queue the change notice of `version` for every patron who can be told (see
    domain.policies.notice_skip: active, an email address, 13 or older, an address neither
    undeliverable nor suppressed for spam; marketing opt-outs play no part), in the patron's
    language, through the outbox.

    Once per patron, resumably: patrons are taken in id order, `batch` at a time, and each batch's
    messages and its `policy_notices` rows commit together, so a run stopped at any point (Ctrl-C,
    kill -9) and run again queues only for those not told yet (they count as `already_notified`);
    the unique (version, patron) pair makes two concurrent runs fail rather than send twice.
    Patrons sharing an address are each told (the design: once per patron), by name.

    `rate` (messages per second) spreads the messages' send times (`available_at`) from now, or
    from the last notice still waiting from an earlier run, so whoever sends the outbox (the
    worker, or the command's own inline sending) never sends faster. `on_patron` is called after
    each patron is looked at (a progress bar).

    :raise PolicyError: for an unknown version, or one not marked material unless `force`.
    """
    policy = session.scalar(select(PolicyVersion).where(PolicyVersion.version == version.strip()))
    if policy is None:
        known = ", ".join(session.scalars(select(PolicyVersion.version).order_by(
            PolicyVersion.effective_at))) or "none yet"
        raise PolicyError(f"no policy version {version.strip()!r}; the versions are: {known}")
    if not policy.material and not force:
        raise PolicyError(f"policy {policy.version} is not a material change, so it is not "
                          "announced by email; use --force to send the notice anyway")
    if rate <= 0:
        raise PolicyError("the notice rate must be positive")
    interval = timedelta(seconds=1 / rate)
    waiting = session.scalar(select(func.max(OutboxMessage.available_at)).where(
        OutboxMessage.template == NOTICE_TEMPLATE, OutboxMessage.status == "pending"))
    next_due = max(now, waiting + interval) if waiting is not None else now
    today = ctx.today(now)
    run = NoticeRun(policy.version)
    effective_day = policy.effective_at.astimezone(ZoneInfo(ctx.timezone)).date()
    contexts = {language: {"version": policy.version, "summary": summary_in(policy, language),
                           "effective_date": format_date(effective_day, "long", locale=language),
                           "in_force": policy.effective_at <= now,
                           "policy_url": ctx.guardians.policy_url}
                for language in LANGUAGES}
    last_id = 0
    while True:
        # Erased patrons (patrons.erased_at, when erasure exists) have no email address left, so
        # they fall under `no_email` here without naming the column.
        patrons = list(session.scalars(select(Patron).where(Patron.id > last_id)
                                       .order_by(Patron.id).limit(batch)))
        if not patrons:
            break
        last_id = patrons[-1].id
        told = set(session.scalars(select(PolicyNotice.patron_id).where(
            PolicyNotice.policy_version_id == policy.id,
            PolicyNotice.patron_id.in_([p.id for p in patrons]))))
        standings = load_standings(session, patrons, purposes=())
        for patron in patrons:
            run.patrons += 1
            address = standings[patron.id].address
            skip = NoticeSkip.ALREADY_NOTIFIED if patron.id in told else notice_skip(
                active=patron.status == "active", has_email=bool(patron.email),
                birth_date=patron.birth_date, today=today, suppressed=address.suppressed,
                undeliverable=address.undeliverable)
            if skip is not None:
                run.skipped[skip] += 1
            else:
                message = queue_email(session, ctx, template=NOTICE_TEMPLATE,
                                      to=patron.email or "", language=patron.preferred_language,
                                      context=contexts[template_language(
                                          patron.preferred_language)], category=MessageCategory.NOTICE.value,
                                      now=now, patron=patron)
                message.available_at = next_due
                session.flush()
                session.add(PolicyNotice(policy_version_id=policy.id, patron_id=patron.id,
                                         outbox_message_id=message.id, queued_at=now))
                run.queued += 1
                run.last_due = next_due
                next_due += interval
            if on_patron is not None:
                on_patron()
        session.commit()
    return run
