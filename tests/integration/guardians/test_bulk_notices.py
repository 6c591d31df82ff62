"""The set-based guardian requests of an import equal the per-link path: `request_consent_for_links`
(rows inserted, notices rendered from stencils) makes the requests and outbox rows that
`request_guardian_consent` makes for each link in turn (rendered by Jinja), ids, random public ids
and the links' tokens aside; and a stencil renders what Jinja renders."""

from __future__ import annotations

import re
from datetime import date, timedelta

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from consent_service.domain.ledger import Actor, Decision, Source
from consent_service.domain.tokens import LinkKind
from consent_service.extensions import db
from consent_service.mail.compose import StencilRenderer, render
from consent_service.models import GuardianLink, GuardianRequest, OutboxMessage, Patron, Topic
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.guardians.consent_request import (
    request_consent_for_links,
    request_guardian_consent,
)
from consent_service.services.guardians.notices import notice_renderer
from tests.conftest import NOW
from tests.integration.guardians.helpers import BASE, invoke, mail_to

# Names that a template could mangle: markup, quotes, an encoded word, spaces, non-Latin letters.
NAMES = st.one_of(
    st.sampled_from(["", "Maya", "Zoë", "<b>Kai</b>", "O'Brien & \"Sons\"", "=?utf-8?q?x?=",
                     "  Ana  María ", "ß", "Ĳsbrand", "李"]),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12),
)
AGES = st.sampled_from([None, 3, 8, 12, 13, 15, 16, 17, 40])
LANGUAGES = st.sampled_from(["en", "es"])
TOPICS = [("events", "Library events", {"es": "Eventos"}), ("kids_teens", "Kids & teens", None)]

guardians_drawn = st.lists(st.fixed_dictionaries({
    "first_name": NAMES, "email": st.booleans(), "language": LANGUAGES}), min_size=1, max_size=3)
children_drawn = st.lists(st.fixed_dictionaries({
    "first_name": NAMES, "age": AGES, "active": st.booleans(), "email": st.booleans(),
    "language": LANGUAGES, "card_allowed": st.booleans(),
    "links": st.lists(st.one_of(st.integers(0, 2), st.sampled_from(["a@example.org",
                                                                     "b@example.org"])),
                      min_size=1, max_size=2, unique=True),
}), min_size=1, max_size=6)


def born(age: int | None) -> date | None:
    return None if age is None else date(NOW.year - age - 1, 12, 31)  # `age` on NOW (1 June)


def start(session, ctx, topics: int, guardians: list[dict], children: list[dict]
          ) -> list[GuardianLink]:
    """An empty database with the topics, the guardians, the children and their links
    (committed); the links in the order they were made."""
    session.rollback()
    for table in reversed(db.metadata.sorted_tables):
        session.execute(table.delete())
    session.commit()
    session.expunge_all()
    for key, name, names in TOPICS[:topics]:
        session.add(Topic(key=key, name=name, names=names, created_at=NOW))
    made = []
    for n, spec in enumerate(guardians):
        email = f"guardian{n}@example.org" if spec["email"] else None
        made.append(Patron(card_number=f"G{n}", public_id=f"p_g{n}", first_name=spec["first_name"],
                           email=email, address_key=ctx.address_key(email) if email else None,
                           birth_date=date(1980, 1, 1), preferred_language=spec["language"],
                           created_at=NOW, updated_at=NOW))
    session.add_all(made)
    session.flush()
    links = []
    for n, spec in enumerate(children):
        email = f"child{n}@example.org" if spec["email"] else None
        child = Patron(card_number=f"K{n}", public_id=f"p_k{n}", first_name=spec["first_name"],
                       email=email, address_key=ctx.address_key(email) if email else None,
                       birth_date=born(spec["age"]), preferred_language=spec["language"],
                       status="active" if spec["active"] else "inactive",
                       created_at=NOW, updated_at=NOW)
        session.add(child)
        session.flush()
        if spec["card_allowed"] and spec["age"] in (13, 15, 16):
            record_decision(session, ctx, DecisionRequest(
                purpose="minor_card", topic=None, decision=Decision.OPT_IN,
                source=Source.STAFF_DESK, actor=Actor.GUARDIAN, occurred_at=NOW - timedelta(days=1),
                patron=child), now=NOW - timedelta(days=1))
        targets = [made[t % len(made)] if isinstance(t, int) else t for t in spec["links"]]
        for target in dict.fromkeys(targets):  # one link per guardian
            if isinstance(target, Patron):
                guardian = target
                link = GuardianLink(child_id=child.id, guardian_id=guardian.id, created_at=NOW)
            else:
                link = GuardianLink(child_id=child.id, guardian_email=target, created_at=NOW)
            session.add(link)
            session.flush()
            links.append(link)
    session.commit()
    return links


_LINK = re.compile(rf"{re.escape(BASE)}/(guardian|preferences)/([\w.-]+)")


def made(session, ctx) -> tuple[list, list]:
    """The requests and notices made, in order, without ids; each signed link checked and written
    as what it names (a guardian link's request by its place in the list)."""
    session.flush()
    requests = list(session.scalars(select(GuardianRequest).order_by(GuardianRequest.id)))
    place = {request.public_id: n for n, request in enumerate(requests)}

    def named(match: re.Match[str]) -> str:
        kind = LinkKind(match.group(1))
        claims = ctx.signer.verify(kind, match.group(2), now=NOW)
        ref = f" request {place[claims.ref]}" if claims.ref is not None else ""
        return f"<{kind.value} link for {claims.patron_id}{ref}>"

    messages = [
        (m.created_at, m.template, m.category, m.patron_id, m.to_address, m.from_address,
         _LINK.sub(named, m.subject), _LINK.sub(named, m.text_body), _LINK.sub(named, m.html_body),
         m.headers, m.custom_args, m.asm_group_id, m.status, m.attempts, m.available_at, m.sent_at,
         m.last_error)
        for m in session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))]
    rows = [(r.child_id, r.guardian_link_id, r.to_email, r.language, r.notice_version, r.status,
             r.created_at, r.expires_at, r.last_sent_at, r.answered_at) for r in requests]
    return rows, messages


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(topics=st.integers(0, 2), guardians=guardians_drawn, children=children_drawn)
@example(topics=2, guardians=[{"first_name": "Pat", "email": True, "language": "es"}],
         children=[{"first_name": "Maya", "age": 8, "active": True, "email": True,
                    "language": "en", "card_allowed": False, "links": [0, "a@example.org"]},
                   {"first_name": "<Kai & Co>", "age": 15, "active": True, "email": False,
                    "language": "es", "card_allowed": False, "links": ["b@example.org"]}])
def test_bulk_requests_and_notices_equal_the_per_link_ones(session, ctx, topics, guardians,
                                                            children):
    links = start(session, ctx, topics, guardians, children)
    link_ids = [link.id for link in links]

    for link_id in link_ids:
        link = session.get(GuardianLink, link_id)
        request_guardian_consent(session, ctx, session.get(Patron, link.child_id), link, now=NOW)
    one_at_a_time = made(session, ctx)
    session.rollback()

    count = request_consent_for_links(
        session, ctx, [session.get(GuardianLink, link_id) for link_id in link_ids], now=NOW)
    together = made(session, ctx)
    session.rollback()

    assert together == one_at_a_time
    assert count == len(one_at_a_time[0])


@settings(max_examples=100, deadline=None)
@given(names=st.lists(st.tuples(NAMES, NAMES), min_size=1, max_size=8), language=LANGUAGES,
       under_13=st.booleans(), topics=st.lists(NAMES, max_size=2))
def test_a_stencil_renders_what_jinja_renders(names, language, under_13, topics):
    renderer = StencilRenderer(("child_first_name", "first_name", "guardian_url",
                                "preferences_url"))
    for child_name, guardian_name in names:
        variables = {
            "child_first_name": child_name, "first_name": guardian_name, "under_13": under_13,
            "purposes": [{"key": "email_marketing", "topics": topics},
                         {"key": "photo_video", "topics": []}],
            "vendor_sharing": [], "vendor_method": "separate_tick",
            "guardian_url": f"{BASE}/guardian/{child_name}.x", "link_days": 7,
            "response_days": 14, "respond_by": "June 15, 2026", "email_only": not guardian_name,
            "policy_url": "https://library.example.org/privacy", "reminder": False,
            "library_name": "Example County Library",
            "library_postal_address": "100 Main St", "preferences_url": f"{BASE}/preferences",
            "preferences_request_url": f"{BASE}/preferences", "unsubscribe_url": None,
            "category": "notice",
        }
        assert renderer("guardian_notice", language, variables) == \
            render("guardian_notice", language, variables)
    assert all(stencil is not None for stencil in renderer._stencils.values())  # none fell back


def test_an_import_renders_each_shape_of_notice_once(session, ctx):
    """The notices of many children of one shape are filled in, not rendered one by one."""
    guardians = [{"first_name": f"Pat{n}", "email": True, "language": "en"} for n in range(3)]
    children = [{"first_name": f"Kid{n}", "age": 8, "active": True, "email": False,
                 "language": "en", "card_allowed": False, "links": [n % 3]} for n in range(30)]
    links = start(session, ctx, 1, guardians, children)
    renderer = notice_renderer()
    renderer._stencils.clear()
    assert request_consent_for_links(session, ctx, links, now=NOW) == 30
    assert len(renderer._stencils) == 1
    assert all(stencil is not None for stencil in renderer._stencils.values())
    session.rollback()


def test_notices_an_import_inserts_as_rows_are_sent_when_it_commits(app, runner, tmp_path):
    """With CONSENT_MAIL_DISPATCH=inline, the notices go out after the import's commit, though
    no OutboxMessage object was flushed for them."""
    path = tmp_path / "patrons.csv"
    path.write_text("card_number,first_name,birth_date,guardian_email\n"
                    "K1,Zoe,2019-05-05,zoe.dad@example.org\n", encoding="utf-8")
    assert app.config["MAIL_DISPATCH"] == "inline"
    result = invoke(runner, "patrons", "import", str(path), "--allow-partial")
    assert "created 1" in result.output
    [notice] = mail_to(app, "zoe.dad@example.org")
    assert notice["Subject"] == "Your consent is needed for Zoe at Example County Library"
