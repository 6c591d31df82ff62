"""The stateful model test (issue 15, item 1): random sequences of patron one-clicks, preference
saves, staff entries and SendGrid webhook events (late, duplicated, opposite), with the clock moving,
against a model of the rules small enough to read at a glance:

- the decision in force for a topic is the latest of the topic's and the whole purpose's decisions
  (on a tie, the opt-out); an email decision is the address's, whoever made it;
- on an opt-out basis a patron is allowed unless an opt-out is in force.

After every step, every patron's eligibility for every purpose and topic equals the model's, and the
stored projections equal a fresh fold of the ledger. Runs on SQLite and on PostgreSQL (in both of
`.ci/run`'s database runs). The patrons are adults, so the guardian rules (proven by their own
property tests) stay out of the model.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import select

from consent_service import runtime
from consent_service.domain.ledger import Actor, Decision, Source
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
PEOPLE = [("S0001", HOUSEHOLDS[0]), ("S0002", HOUSEHOLDS[0]), ("S0003", HOUSEHOLDS[1])]
_signer = WebhookSigner()

patron_index = st.integers(0, len(PEOPLE) - 1)
decisions = st.sampled_from([Decision.OPT_IN, Decision.OPT_OUT])
topics = st.sampled_from(TOPICS)
minutes_ago = st.integers(0, 600)


def test_eligibility_and_projections_follow_the_model_through_random_histories(app_factory):
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
            for card, email in PEOPLE:
                patron = Patron(card_number=card, first_name="Sam", last_name=card, email=email,
                                address_key=ctx.address_key(email), created_at=NOW,
                                updated_at=NOW)
                session.add(patron)
                self.patrons.append(patron)
            session.commit()
            self.ids = [p.id for p in self.patrons]
            self.public_ids = [p.public_id for p in self.patrons]
            self.keys = [p.address_key for p in self.patrons]
            self.client = app.test_client()
            # the model: (level, subject, purpose, topic) -> every (time, decision) recorded
            self.model: dict[tuple[str, object, str, str], list[tuple[object, Decision]]] = {}
            self.sent_ids: list[str] = []

        def teardown(self) -> None:
            db.session.remove()
            self.context.pop()

        def _expect(self, level: str, subject: object, purpose: str, topic: str | None,
                    decision: Decision, at) -> None:  # type: ignore[no-untyped-def]
            self.model.setdefault((level, subject, purpose, topic or ""), []).append(
                (at, decision))

        def _expect_decision(self, index: int, purpose: str, topic: str | None,
                             decision: Decision, at) -> None:  # type: ignore[no-untyped-def]
            self._expect("patron", self.ids[index], purpose, topic, decision, at)
            if purpose == "email_marketing":
                self._expect("address", self.keys[index], purpose, topic, decision, at)

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
                self._expect_decision(index, "email_marketing", topic, Decision.OPT_OUT, clock.at)

        @rule(index=patron_index, purpose=st.sampled_from(PURPOSES), topic=topics,
              decision=decisions, ago=minutes_ago,
              source=st.sampled_from([Source.PREFERENCE_CENTER, Source.STAFF_PHONE]))
        def decide(self, index: int, purpose: str, topic: str | None, decision: Decision,
                   ago: int, source: Source) -> None:
            if purpose != "email_marketing":
                topic = None
            at = clock.at - timedelta(minutes=ago)
            session = db.session
            patron = session.get(Patron, self.ids[index])
            result = record_decision(session, self.ctx, DecisionRequest(
                purpose=purpose, topic=topic, decision=decision, source=source,
                actor=Actor.STAFF if source is Source.STAFF_PHONE else Actor.PATRON,
                occurred_at=at, patron=patron), now=clock.at)
            session.commit()
            if result.written:
                self._expect_decision(index, purpose, topic, decision, at)

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
                         None if kind == "unsubscribe" else topic, decision, at)

        def _in_force(self, level: str, subject: object, purpose: str,
                      topic: str | None) -> Decision | None:
            recorded = [*self.model.get((level, subject, purpose, topic or ""), []),
                        *(self.model.get((level, subject, purpose, ""), []) if topic else [])]
            if not recorded:
                return None
            return max(recorded, key=lambda r: (r[0], r[1] is Decision.OPT_OUT))[1]

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
                    email = purpose_key == "email_marketing"
                    level, subject = ("address", self.keys[index]) if email else (
                        "patron", self.ids[index])
                    for topic in TOPICS if email else [None]:
                        in_force = self._in_force(level, subject, purpose_key, topic)
                        if in_force is Decision.OPT_OUT:
                            expected = (False, "opted_out")
                        elif purpose.basis is Basis.OPT_IN and in_force is None:
                            expected = (False, "not_opted_in")
                        else:
                            expected = (True, None)
                        verdict = standings[patron.id].verdict(purpose, topic, today)
                        got = (verdict.allowed, verdict.reason.value if verdict.reason else None)
                        assert got == expected, (patron.card_number, purpose_key, topic)

        @invariant()
        def projections_are_a_fold_of_the_ledger(self) -> None:
            session = db.session
            events = session.scalars(select(ConsentEvent).order_by(ConsentEvent.id)).all()
            for model, subject in ((PatronDecision, "patron_id"), (AddressDecision, "address_key")):
                assert _stored(session, model, subject) == _folded(events, subject)

    run_state_machine_as_test(Library, settings=settings(
        max_examples=25, stateful_step_count=25, deadline=None, derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
