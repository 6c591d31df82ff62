"""Demo data that shows the rules at work: an adult, a teen, a child with a guardian, a shared address."""

from __future__ import annotations

import tempfile
from datetime import date, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.domain.purposes import PurposeKey
from consent_service.domain.tokens import LinkKind
from consent_service.models import ConsentEvent, Patron, PolicyVersion
from consent_service.services.context import ServiceContext
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.guardians.staff import guardian_link_for_card
from consent_service.services.patron_import import import_patrons
from consent_service.services.topics import add_topic

TOPICS = (  # key, English name, Spanish name
    ("events", "Events and programs", "Eventos y programas"),
    ("kids_teens", "Kids & teens", "Niños y jóvenes"),
    ("adult_learning", "Adult learning", "Aprendizaje para adultos"),
    ("library_news", "Library news", "Noticias de la biblioteca"),
)

HEADER = ("card_number,first_name,last_name,email,birth_date,preferred_language,street,city,state,"
          "postal_code,guardian_card_number,guardian_email,status")


def _years_ago(today: date, years: int, month: int, day: int) -> str:
    return date(today.year - years, month, day).isoformat()


def _patrons_csv(today: date) -> str:
    rows = [
        f"D0000001,Ana,Reyes,ana.reyes@example.org,{_years_ago(today, 41, 4, 2)},es,"
        "12 Aspen Way,Castle Rock,CO,80104,,,active",
        f"D0000002,Sam,Okafor,okafor.family@example.org,{_years_ago(today, 38, 9, 23)},en,"
        "400 Elm St,Parker,CO,80134,,,active",
        f"D0000003,Grace,Okafor,okafor.family@example.org,{_years_ago(today, 37, 1, 11)},en,"
        "400 Elm St,Parker,CO,80134,,,active",
        f"D0000004,Milo,Okafor,okafor.family@example.org,{_years_ago(today, 8, 6, 30)},en,"
        "400 Elm St,Parker,CO,80134,D0000002,,active",
        f"D0000005,Lena,Park,lena.park@example.org,{_years_ago(today, 15, 11, 5)},en,"
        "9 Ridge Rd,Lone Tree,CO,80124,,pat.park@example.org,active",
        "D0000006,Hal,Bishop,,1950-02-14,en,77 Main St,Castle Rock,CO,80104,,,inactive",
    ]
    return "\n".join([HEADER, *rows]) + "\n"


def load_demo(session: Session, ctx: ServiceContext, *, now: datetime,
              flask_command: str = "flask --app consent_service") -> list[str]:
    """Load the demo and return what to open and try (`flask_command`: how the person who ran the
    demo runs a command, so the lines work as shown). Safe to run again, also after a run that
    failed half-way: topics and the patron import are idempotent, and the demo decisions are
    recorded only while the demo patrons have none."""
    for key, name, spanish in TOPICS:
        add_topic(session, key=key, name=name, names={"es": spanish}, sendgrid_group_id=None,
                  now=now)
    if session.scalar(select(PolicyVersion.id).limit(1)) is None:
        session.add(PolicyVersion(
            version="2026-01", effective_at=now - timedelta(days=30), material=True, created_at=now,
            summary="Patron privacy policy: email and postal mail about programs, photos at events, "
                    "vendors that keep contact data current, parental consent for children."))
    with tempfile.TemporaryDirectory() as folder:
        csv_path = Path(folder) / "demo-patrons.csv"
        csv_path.write_text(_patrons_csv(ctx.today(now)), encoding="utf-8")
        import_patrons(session, ctx, csv_path, now=now, skip_invalid=False)
    demo_ids = select(Patron.id).where(Patron.card_number.like("D00000%"))
    if session.scalar(select(ConsentEvent.id).where(ConsentEvent.patron_id.in_(demo_ids)).limit(1)) is None:
        _demo_decisions(session, ctx, now)
        session.commit()
    by_card = {p.card_number: p for p in session.scalars(select(Patron))}
    ana, sam = by_card["D0000001"], by_card["D0000002"]
    return [
        "Demo data is loaded: 6 patrons, 4 email topics, policy 2026-01.",
        "  D0000001 Ana Reyes (adult, Spanish) - no postal mail",
        "  D0000002/3 Sam & Grace Okafor - share one email address; Sam stopped 'library news' for it",
        "  D0000004 Milo Okafor (8) - Sam is his guardian; consented to programs only",
        "  D0000005 Lena Park (15) - her guardian is an email address awaiting a patron record",
        "  D0000006 Hal Bishop - inactive, no email",
        "",
        "Open:",
        f"  {ctx.public_base_url}/",
        f"  unsubscribe (Ana, events): {ctx.link(LinkKind.UNSUBSCRIBE, ana.public_id, 'events')}",
        f"  preferences (Sam):         {ctx.link(LinkKind.PREFERENCES, sam.public_id)}",
        f"  guardian page (Sam, for Milo): {guardian_link_for_card(session, ctx, 'D0000004', now=now)}",
        f"  email me a link:           {ctx.public_base_url}/preferences with ana.reyes@example.org "
        "(Spanish) or okafor.family@example.org (a household of three)",
        "Mail the service sends (guardian notices for Milo and Lena, confirmations) is written as .eml",
        "files to the mail folder (CONSENT_MAIL_FILE_DIR, by default instance/mail/).",
        "",
        "Try:",
        *(f"  {flask_command} {command}" for command in TRY),
    ]


TRY = (
    "patrons show D0000004",
    "export contacts --purpose email_marketing --topic kids_teens --excluded excluded.csv",
    "export contacts --purpose postal_marketing",
    "links unsubscribe D0000003 --topic events",
    "staff create admin@library.example.org --role admin --generate-password   # then /staff/",
)


def _demo_decisions(session: Session, ctx: ServiceContext, now: datetime) -> None:
    by_card = {p.card_number: p for p in session.scalars(select(Patron))}
    decisions = [
        ("D0000001", PurposeKey.POSTAL_MARKETING, None, Decision.OPT_OUT, Actor.STAFF, Source.STAFF_DESK, 20),
        ("D0000002", PurposeKey.EMAIL_MARKETING, "library_news", Decision.OPT_OUT, Actor.PATRON,
         Source.PREFERENCE_CENTER, 10),
        ("D0000004", PurposeKey.CHILD_PROGRAMS, None, Decision.OPT_IN, Actor.GUARDIAN,
         Source.GUARDIAN_PAGE, 5),
        ("D0000005", PurposeKey.THIRD_PARTY_MODELING, None, Decision.OPT_OUT, Actor.PATRON, Source.GPC, 2),
    ]
    for card, purpose, topic, decision, actor, source, days_ago in decisions:
        record_decision(session, ctx, DecisionRequest(
            purpose=purpose, topic=topic, decision=decision, source=source, actor=actor,
            occurred_at=now - timedelta(days=days_ago), patron=by_card[card],
            evidence={"note": "demo data"}), now=now)


