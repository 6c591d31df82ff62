"""The stateful model test (issue 15, item 1): random sequences of patron one-clicks, preference
saves, staff entries, a guardian's decisions for a child, `consents import` files, SendGrid webhook
events (late, duplicated, opposite) and exports, with the clock moving, against a model of the rules
small enough to read at a glance:

- the decision in force for a topic is the latest of the topic's and the whole purpose's decisions
  (on a tie, the opt-out, then the guardian over staff over the patron); an email decision is the
  address's, whoever made it;
- for a child under 13, an opt-in takes effect only from a guardian (anyone's opt-out does), and the
  child is allowed only while the decision in force on the child's own record is a guardian's opt-in;
- on an opt-out basis an adult is allowed unless an opt-out is in force.

After every step, every patron's eligibility for every purpose and topic equals the model's, and the
stored projections equal a fresh fold of the ledger; an export step checks that the file holds one
row for each address (or patron) the model allows and the excluded file every other patron with the
model's reason. Runs on SQLite and on PostgreSQL (in both of `.ci/run`'s database runs).
"""

from __future__ import annotations

import csv
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import select

from consent_service import runtime
from consent_service.domain.ledger import CHILD_AGE, Actor, Decision, Source, age_on
from consent_service.domain.purposes import Basis
from consent_service.domain.tokens import LinkKind
from consent_service.extensions import db
from consent_service.models import (
    AddressDecision,
    ConsentEvent,
    Patron,
    PatronDecision,
    Topic,
)
from consent_service.services.decisions import DecisionRequest, record_decision
from consent_service.services.standing import load_standings
from tests.conftest import NOW, Clock
from tests.fakes.sendgrid_api import WebhookSigner
from tests.integration.sendgrid_fixtures import post_batch, sendgrid_event
from tests.integration.test_projection_matches_ledger import _folded, _stored

GROUPS = {"events": 101, "news": 102}
TOPICS = [None, "events", "news"]
PURPOSES = ["email_marketing", "photo_video"]
HOUSEHOLDS = ["ana.home@example.org", "lee.home@example.org"]
# (card, email, birth date): two adults and an 8-year-old sharing the first address, one adult alone
CHILD_BORN = date(NOW.year - 8, 6, 1)
PEOPLE = [("S0001", HOUSEHOLDS[0], None), ("S0002", HOUSEHOLDS[0], None),
          ("S0003", HOUSEHOLDS[1], None), ("S0004", HOUSEHOLDS[0], CHILD_BORN)]
CHILD = 3
ACTOR_RANK = {Actor.PATRON: 1, Actor.STAFF: 2, Actor.GUARDIAN: 3}
_signer = WebhookSigner()

patron_index = st.integers(0, len(PEOPLE) - 1)
decisions = st.sampled_from([Decision.OPT_IN, Decision.OPT_OUT])
topics = st.sampled_from(TOPICS)
minutes_ago = st.integers(0, 600)


def test_eligibility_and_projections_follow_the_model_through_random_histories(app_factory,
                                                                              tmp_path: Path):
    clock = Clock(NOW)
    app = app_factory(CLOCK=clock, SENDGRID_WEBHOOK_PUBLIC_KEY=_signer.public_key_base64)

    class Library(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            clock.at = NOW
            self.context = app.app_context()
            self.context.push()
            session = db.session
            for table in reversed(db.metadata.sorted_tables):
                session.execute(table.delete())
            session.add_all([Topic(key=key, name=key.title(), sendgrid_group_id=group,
                                   created_at=NOW) for key, group in GROUPS.items()])
            ctx = self.ctx = runtime.context()
            self.patrons = []
            for card, email, born in PEOPLE:
                patron = Patron(card_number=card, first_name="Sam", last_name=card, email=email,
                                address_key=ctx.address_key(email), birth_date=born,
                                created_at=NOW, updated_at=NOW)
                session.add(patron)
                self.patrons.append(patron)
            session.commit()
            self.ids = [p.id for p in self.patrons]
            self.public_ids = [p.public_id for p in self.patrons]
            self.keys = [p.address_key for p in self.patrons]
            self.client = app.test_client()
            self.runner = app.test_cli_runner()
            # the model: (level, subject, purpose, topic) -> every effective (time, decision, actor)
            self.model: dict[tuple[str, object, str, str],
                             list[tuple[object, Decision, Actor]]] = {}
            self.sent_ids: list[str] = []
            self.files = 0

        def teardown(self) -> None:
            db.session.remove()
            self.context.pop()

        def _expect(self, level: str, subject: object, purpose: str, topic: str | None,
                    decision: Decision, at, actor: Actor) -> None:  # type: ignore[no-untyped-def]
            self.model.setdefault((level, subject, purpose, topic or ""), []).append(
                (at, decision, actor))

        def _expect_decision(self, index: int, purpose: str, topic: str | None,
                             decision: Decision, at,  # type: ignore[no-untyped-def]
                             actor: Actor) -> None:
            self._expect("patron", self.ids[index], purpose, topic, decision, at, actor)
            if purpose == "email_marketing":
                self._expect("address", self.keys[index], purpose, topic, decision, at, actor)

        @staticmethod
        def _takes_effect(index: int, decision: Decision, actor: Actor, at) -> bool:  # type: ignore[no-untyped-def]
            born = PEOPLE[index][2]
            return (decision is Decision.OPT_OUT or actor is Actor.GUARDIAN or born is None
                    or age_on(born, at.date()) >= CHILD_AGE)

        def _record(self, index: int, purpose: str, topic: str | None, decision: Decision,
                    ago: int, source: Source, actor: Actor) -> None:
            at = clock.at - timedelta(minutes=ago)
            session = db.session
            patron = session.get(Patron, self.ids[index])
            result = record_decision(session, self.ctx, DecisionRequest(
                purpose=purpose, topic=topic, decision=decision, source=source, actor=actor,
                occurred_at=at, patron=patron), now=clock.at)
            session.commit()
            effective = self._takes_effect(index, decision, actor, at)
            if result.written:
                assert result.event.effective is effective, (PEOPLE[index][0], decision, actor)
                if effective:
                    self._expect_decision(index, purpose, topic, decision, at, actor)

        @rule(minutes=st.integers(1, 120))
        def time_passes(self, minutes: int) -> None:
            clock.at = clock.at + timedelta(minutes=minutes)

        @rule(index=patron_index, topic=topics)
        def one_click(self, index: int, topic: str | None) -> None:
            path = urlsplit(self.ctx.link(LinkKind.UNSUBSCRIBE, self.public_ids[index],
                                          topic)).path
            already = self._in_force("address", self.keys[index], "email_marketing", topic)
            answer = self.client.post(path, data={"List-Unsubscribe": "One-Click"})
            assert answer.status_code == 200
            if already is not Decision.OPT_OUT:  # idempotent: an opt-out in force writes nothing
                self._expect_decision(index, "email_marketing", topic, Decision.OPT_OUT, clock.at,
                                      Actor.PATRON)

        @rule(index=patron_index, purpose=st.sampled_from(PURPOSES), topic=topics,
              decision=decisions, ago=minutes_ago,
              source=st.sampled_from([Source.PREFERENCE_CENTER, Source.STAFF_PHONE]))
        def decide(self, index: int, purpose: str, topic: str | None, decision: Decision,
                   ago: int, source: Source) -> None:
            """The patron (or staff for them; for the child, an opt-in that must not count)."""
            self._record(index, purpose, topic if purpose == "email_marketing" else None,
                         decision, ago, source,
                         Actor.STAFF if source is Source.STAFF_PHONE else Actor.PATRON)

        @rule(purpose=st.sampled_from(PURPOSES), topic=topics, decision=decisions,
              ago=st.sampled_from([0, 0, 30, 600]))
        def guardian_decides(self, purpose: str, topic: str | None, decision: Decision,
                             ago: int) -> None:
            """The child's guardian on the guardian page (now) or on a paper form staff enter
            later (back-dated)."""
            source = Source.GUARDIAN_PAGE if ago == 0 else Source.STAFF_PAPER_FORM
            self._record(CHILD, purpose, topic if purpose == "email_marketing" else None,
                         decision, ago, source, Actor.GUARDIAN)

        @rule(rows=st.lists(st.tuples(patron_index, st.sampled_from(PURPOSES), topics, decisions,
                                      minutes_ago, st.sampled_from([Actor.PATRON, Actor.STAFF,
                                                                    Actor.GUARDIAN])),
                            min_size=1, max_size=3))
        def consents_import(self, rows: list[tuple[int, str, str | None, Decision, int, Actor]]
                            ) -> None:
            """A `consents import` file of historic decisions, each with its own time and actor
            (a guardian only for the child), under a library's own source label."""
            lines = ["card_number,purpose,topic,decision,occurred_at,source,actor"]
            expected = []
            for index, purpose, topic, decision, ago, actor in rows:
                if actor is Actor.GUARDIAN and index != CHILD:
                    actor = Actor.STAFF
                topic = topic if purpose == "email_marketing" else None
                at = (clock.at - timedelta(minutes=ago)).replace(microsecond=0)
                lines.append(f"{PEOPLE[index][0]},{purpose},{topic or ''},{decision.value},"
                             f"{at.isoformat()},paper_form,{actor.value}")
                if self._takes_effect(index, decision, actor, at):
                    expected.append((index, purpose, topic, decision, at, actor))
            self.files += 1
            path = tmp_path / f"consents-{self.files}.csv"
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            result = self.runner.invoke(args=["consents", "import", str(path)])
            assert result.exit_code == 0, result.output
            for index, purpose, topic, decision, at, actor in expected:
                # a repeat of what is in force writes nothing and changes nothing in the model
                self._expect_decision(index, purpose, topic, decision, at, actor)

        @rule(purpose=st.sampled_from(PURPOSES), topic=topics)
        def export(self, purpose: str, topic: str | None) -> None:
            """`export contacts`: one row per allowed address (email) or patron, and every other
            patron in the excluded file with the model's reason."""
            email = purpose == "email_marketing"
            topic = topic if email else None
            self.files += 1
            output, excluded = (tmp_path / f"export-{self.files}.csv",
                                tmp_path / f"excluded-{self.files}.csv")
            result = self.runner.invoke(args=[
                "export", "contacts", "--purpose", purpose, *(["--topic", topic] if topic else []),
                "--output", str(output), "--excluded", str(excluded)])
            assert result.exit_code == 0, result.output
            verdicts = {index: self._verdict(index, purpose, topic) for index in range(len(PEOPLE))}
            with output.open(encoding="utf-8", newline="") as rows:
                written = [row["email"] if email else row["patron_id"] for row in csv.DictReader(rows)]
            allowed = {index for index, verdict in verdicts.items() if verdict[0]}
            expected = ({PEOPLE[index][1] for index in allowed} if email
                        else {self.public_ids[index] for index in allowed})
            assert sorted(written) == sorted(expected), (purpose, topic, verdicts)
            with excluded.open(encoding="utf-8", newline="") as rows:
                left_out = {row["card_number"]: row["reason"] for row in csv.DictReader(rows)}
            assert left_out == {PEOPLE[index][0]: verdict[1] for index, verdict in verdicts.items()
                                if not verdict[0]}, (purpose, topic)

        @rule(household=st.integers(0, len(HOUSEHOLDS) - 1),
              kind=st.sampled_from(["unsubscribe", "group_unsubscribe", "group_resubscribe"]),
              topic=st.sampled_from(["events", "news"]), ago=minutes_ago,
              repeat=st.booleans())
        def sendgrid_says(self, household: int, kind: str, topic: str, ago: int,
                          repeat: bool) -> None:
            at = (clock.at - timedelta(minutes=ago)).replace(microsecond=0)
            if repeat and self.sent_ids:  # SendGrid sends an event again: nothing changes
                answer = post_batch(self.client, _signer, [sendgrid_event(
                    "unsubscribe", HOUSEHOLDS[household], at, sg_event_id=self.sent_ids[-1])],
                    signed_at=clock.at)
                assert answer.status_code == 200, answer.text
                return
            event_id = f"sg-{len(self.sent_ids)}"
            self.sent_ids.append(event_id)
            fields = {} if kind == "unsubscribe" else {"asm_group_id": GROUPS[topic]}
            answer = post_batch(self.client, _signer, [sendgrid_event(
                kind, HOUSEHOLDS[household], at, sg_event_id=event_id, **fields)],
                signed_at=clock.at)
            assert answer.status_code == 200, answer.text
            decision = Decision.OPT_IN if kind == "group_resubscribe" else Decision.OPT_OUT
            key = self.ctx.address_key(HOUSEHOLDS[household])
            self._expect("address", key, "email_marketing",
                         None if kind == "unsubscribe" else topic, decision, at, Actor.PATRON)

        def _ruling(self, level: str, subject: object, purpose: str,
                    topic: str | None) -> tuple[object, Decision, Actor] | None:
            recorded = [*self.model.get((level, subject, purpose, topic or ""), []),
                        *(self.model.get((level, subject, purpose, ""), []) if topic else [])]
            if not recorded:
                return None
            return max(recorded, key=lambda r: (r[0], r[1] is Decision.OPT_OUT, ACTOR_RANK[r[2]]))

        def _in_force(self, level: str, subject: object, purpose: str,
                      topic: str | None) -> Decision | None:
            ruling = self._ruling(level, subject, purpose, topic)
            return ruling[1] if ruling else None

        def _verdict(self, index: int, purpose_key: str, topic: str | None
                     ) -> tuple[bool, str | None]:
            """The model's answer: allowed, or the reason the patron is left out."""
            email = purpose_key == "email_marketing"
            level, subject = ("address", self.keys[index]) if email else ("patron", self.ids[index])
            if self._in_force(level, subject, purpose_key, topic) is Decision.OPT_OUT:
                return (False, "opted_out")
            if PEOPLE[index][2] is not None:  # the child: their own record decides
                own = self._ruling("patron", self.ids[index], purpose_key, topic)
                if own is not None and own[1] is Decision.OPT_OUT:
                    return (False, "opted_out")
                if own is None or own[2] is not Actor.GUARDIAN:
                    return (False, "guardian_consent_required")
                return (True, None)
            if (self.ctx.catalog.get(purpose_key).basis is Basis.OPT_IN
                    and self._in_force(level, subject, purpose_key, topic) is None):
                return (False, "not_opted_in")
            return (True, None)

        @invariant()
        def eligibility_is_the_models(self) -> None:
            session = db.session
            session.expire_all()
            patrons = [session.get(Patron, patron_id) for patron_id in self.ids]
            standings = load_standings(session, patrons)
            today = self.ctx.today(clock.at)
            for index, patron in enumerate(patrons):
                for purpose_key in PURPOSES:
                    purpose = self.ctx.catalog.get(purpose_key)
                    for topic in TOPICS if purpose_key == "email_marketing" else [None]:
                        verdict = standings[patron.id].verdict(purpose, topic, today)
                        got = (verdict.allowed, verdict.reason.value if verdict.reason else None)
                        assert got == self._verdict(index, purpose_key, topic), (
                            patron.card_number, purpose_key, topic)

        @invariant()
        def projections_are_a_fold_of_the_ledger(self) -> None:
            session = db.session
            events = session.scalars(select(ConsentEvent).order_by(ConsentEvent.id)).all()
            for model, subject in ((PatronDecision, "patron_id"), (AddressDecision, "address_key")):
                assert _stored(session, model, subject) == _folded(events, subject)

    run_state_machine_as_test(Library, settings=settings(
        max_examples=25, stateful_step_count=25, deadline=None, derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
