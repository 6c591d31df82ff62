"""Outbound mail: templates in both languages, what every message must carry, the outbox and its
mailers (file, memory, SendGrid), and sending right after the request or command that queued it."""

from __future__ import annotations

import email
import email.policy
import logging
import re
import threading
from datetime import timedelta
from urllib.parse import urlsplit

import click
import pytest
from flask import Blueprint
from jinja2 import UndefinedError
from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service import create_app
from consent_service.delivery.mailers import MailConfigError, mailer_for
from consent_service.delivery.sender import CLAIM_SECONDS, send_pending_mail
from consent_service.domain.tokens import InvalidLinkError, LinkKind
from consent_service.extensions import csrf, db
from consent_service.mail.backends import FileMailer, MemoryMailer
from consent_service.mail.compose import MailError
from consent_service.models import OutboxMessage, Topic
from consent_service.sendgrid.mailer import SendGridMailer
from consent_service.services.outgoing_mail import queue_email
from tests.conftest import NOW, app_config
from tests.fakes.sendgrid_api import FakeSendGrid

POSTAL_ADDRESS = "Example County Library, 100 Main St, Castle Rock, CO 80104"
ADDRESS = "reader@example.org"

CONTEXTS = {
    "preferences_link": {"links": [{"first_name": "Ana", "url": "https://consent.example.org/p/1"},
                                   {"first_name": "Tomás", "url": "https://consent.example.org/p/2"}]},
    "preferences_saved": {"changes": [{"label": "Library events", "decision_label": "No"}]},
    "marketing_sample": {},
}
CATEGORIES = {"preferences_link": "transactional", "preferences_saved": "transactional",
              "marketing_sample": "marketing"}


class FailingMailer:
    """A provider that is down, and says so with the recipient's address in its error."""

    def __init__(self) -> None:
        self.tries = 0

    def send(self, message: OutboxMessage) -> str | None:
        self.tries += 1
        raise ConnectionError(f"provider unreachable while sending to {message.to_address}")


@pytest.fixture
def events_topic(session):
    session.add(Topic(key="events", name="Events", sendgrid_group_id=4242, created_at=NOW))
    session.commit()
    return "events"


def queue(session, ctx, template="preferences_saved", *, patron=None, language="en", topic=None,
          to=ADDRESS, context=None, now=NOW):
    return queue_email(session, ctx, template=template, to=to, language=language,
                       context=CONTEXTS[template] if context is None else context,
                       category=CATEGORIES[template], now=now, patron=patron, topic=topic)


def outbox(session):
    return session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()


def read_eml(path):
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


def token_of(url):
    kind, token = urlsplit(url).path.strip("/").split("/")
    return kind, token


# -- templates and what every message carries -----------------------------------------------------


@pytest.mark.parametrize("language", ["en", "es"])
@pytest.mark.parametrize("template", sorted(CONTEXTS))
def test_every_template_renders_in_english_and_spanish_with_address_and_preference_link(
        session, ctx, make_patron, template, language):
    patron = make_patron(first_name="Ana", preferred_language=language)
    message = queue(session, ctx, template, patron=patron, language=language)

    assert message.subject.strip() and "\n" not in message.subject
    for body in (message.text_body, message.html_body):
        assert POSTAL_ADDRESS in body
        assert "Ana" in body
        tokens = re.findall(r"https://consent\.example\.org/preferences/([\w.-]+)", body)
        assert tokens, "no preference link"
        assert {ctx.signer.verify(LinkKind.PREFERENCES, t).patron_id for t in tokens} == {
            patron.public_id}
    footer = "Recibe este correo" if language == "es" else "You're getting this email"
    assert footer in message.text_body and footer in message.html_body
    assert f'<html lang="{language}">' in message.html_body


def test_a_missing_template_variable_fails_the_caller_and_queues_nothing(session, ctx, make_patron):
    patron = make_patron()
    with pytest.raises(UndefinedError):
        queue(session, ctx, "preferences_saved", patron=patron, context={})
    session.commit()
    assert outbox(session) == []


def test_a_language_without_templates_gets_english(session, ctx, make_patron):
    message = queue(session, ctx, "preferences_saved", patron=make_patron(), language="fr")
    assert message.subject == "We saved your library choices"


def test_household_link_message_lists_one_link_per_person_by_first_name(session, ctx):
    message = queue(session, ctx, "preferences_link")
    assert "Ana: https://consent.example.org/p/1" in message.text_body
    assert "Tomás: https://consent.example.org/p/2" in message.text_body
    assert 'href="https://consent.example.org/p/2"' in message.html_body


def test_html_escapes_what_the_patron_typed_but_text_keeps_it(session, ctx, make_patron):
    patron = make_patron(first_name="<b>Bo</b> & Co")
    message = queue(session, ctx, "preferences_saved", patron=patron)
    assert "&lt;b&gt;Bo&lt;/b&gt; &amp; Co" in message.html_body
    assert "<b>Bo</b> & Co" in message.text_body


def test_without_a_patron_the_preference_link_is_the_page_that_emails_one(session, ctx):
    message = queue(session, ctx, "preferences_link")
    assert message.patron_id is None and message.custom_args == {}
    assert "https://consent.example.org/preferences\n" in message.text_body
    assert POSTAL_ADDRESS in message.text_body and POSTAL_ADDRESS in message.html_body


def test_marketing_carries_one_click_unsubscribe_for_that_patron_and_topic(
        session, ctx, make_patron, events_topic):
    patron = make_patron(first_name="Ana", card="21000099")
    message = queue(session, ctx, "marketing_sample", patron=patron, topic=events_topic)

    header = message.headers["List-Unsubscribe"]
    assert message.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = re.fullmatch(r"<(https://[^>]+)>", header).group(1)
    assert url.startswith("https://consent.example.org/unsubscribe/")
    kind, token = token_of(url)
    assert kind == "unsubscribe"
    claims = ctx.signer.verify(LinkKind.UNSUBSCRIBE, token)
    assert (claims.patron_id, claims.topic) == (patron.public_id, "events")
    with pytest.raises(InvalidLinkError):
        ctx.signer.verify(LinkKind.PREFERENCES, token)
    assert url in message.text_body
    assert f'href="{url}"' in message.html_body
    assert message.custom_args == {"patron_id": patron.public_id}
    assert message.asm_group_id == 4242
    carried = repr((message.custom_args, message.headers))
    assert ADDRESS not in carried and "21000099" not in carried and "Ana" not in carried


def test_marketing_to_all_library_email_unsubscribes_from_everything(session, ctx, make_patron):
    patron = make_patron()
    message = queue(session, ctx, "marketing_sample", patron=patron)
    claims = ctx.signer.verify(LinkKind.UNSUBSCRIBE, token_of(
        message.headers["List-Unsubscribe"].strip("<>"))[1])
    assert claims.topic is None and message.asm_group_id is None


def test_transactional_mail_has_no_unsubscribe(session, ctx, make_patron):
    message = queue(session, ctx, "preferences_saved", patron=make_patron())
    assert message.headers == {}
    assert "/unsubscribe/" not in message.text_body + message.html_body


def test_marketing_without_a_patron_is_refused(session, ctx):
    with pytest.raises(MailError, match="needs a patron"):
        queue(session, ctx, "marketing_sample")


def test_an_unknown_topic_is_refused(session, ctx, make_patron):
    with pytest.raises(MailError, match="unknown topic"):
        queue(session, ctx, "marketing_sample", patron=make_patron(), topic="nope")


# -- the outbox and its mailers -------------------------------------------------------------------


def test_file_mailer_writes_one_parseable_multipart_eml_per_message(
        session, ctx, make_patron, tmp_path, events_topic):
    patron = make_patron()
    first = queue(session, ctx, "preferences_saved", patron=patron)
    second = queue(session, ctx, "marketing_sample", patron=patron, topic=events_topic,
                   language="es")
    session.commit()
    directory = tmp_path / "outgoing"

    assert send_pending_mail(session, FileMailer(directory), now=NOW) == 2

    files = sorted(p.name for p in directory.iterdir())
    assert files == [f"{first.id}-preferences_saved.eml", f"{second.id}-marketing_sample.eml"]
    parsed = read_eml(directory / files[1])
    assert parsed.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert parsed["To"] == ADDRESS
    assert parsed["From"] == "Library <library@example.org>"
    assert parsed["Subject"] == "Este mes en Example County Library"
    assert parsed["Date"].datetime == NOW
    assert parsed["Message-ID"].startswith(f"<outbox-{second.id}.")
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["List-Unsubscribe"] == second.headers["List-Unsubscribe"]
    text = parsed.get_body(preferencelist=("plain",)).get_content()
    assert "¡Los esperamos!" in text and POSTAL_ADDRESS in text
    assert "List-Unsubscribe" not in read_eml(directory / files[0])


def test_sending_marks_sent_clears_the_address_and_never_sends_twice(session, ctx, make_patron):
    queue(session, ctx, "preferences_saved", patron=make_patron())
    session.commit()
    mailer = MemoryMailer()

    assert send_pending_mail(session, mailer, now=NOW) == 1
    assert send_pending_mail(session, mailer, now=NOW + timedelta(days=1)) == 0

    [row] = outbox(session)
    assert (row.status, row.sent_at, row.to_address, row.attempts) == ("sent", NOW, None, 1)
    assert len(mailer.sent) == 1 and mailer.sent[0]["To"] == ADDRESS


def test_mail_queued_for_later_waits(session, ctx, make_patron):
    queue(session, ctx, "preferences_saved", patron=make_patron(), now=NOW + timedelta(hours=1))
    session.commit()
    mailer = MemoryMailer()
    assert send_pending_mail(session, mailer, now=NOW) == 0
    assert send_pending_mail(session, mailer, now=NOW + timedelta(hours=1)) == 1


def test_a_message_claimed_by_a_sender_that_crashed_goes_out_once_the_claim_lapses(
        session, ctx, make_patron):
    queue(session, ctx, "preferences_saved", patron=make_patron())
    session.commit()

    class CrashingMailer:
        def send(self, message):
            raise KeyboardInterrupt  # the process dies mid-send: nothing is recorded

    with pytest.raises(KeyboardInterrupt):
        send_pending_mail(session, CrashingMailer(), now=NOW)
    session.rollback()
    mailer = MemoryMailer()
    assert send_pending_mail(session, mailer, now=NOW + timedelta(seconds=CLAIM_SECONDS - 1)) == 0
    assert send_pending_mail(session, mailer, now=NOW + timedelta(seconds=CLAIM_SECONDS)) == 1
    assert len(mailer.sent) == 1


@pytest.mark.postgresql_only
def test_two_senders_at_once_never_send_the_same_message(session, ctx, make_patron):
    patron = make_patron()
    for _ in range(4):
        queue(session, ctx, "preferences_saved", patron=patron)
    session.commit()
    both_sending = threading.Barrier(2, timeout=10)
    sent_ids: list[int] = []

    class MeetingMailer:
        """Holds each sender inside its first send until the other is inside its own."""

        def __init__(self) -> None:
            self.first = True

        def send(self, message):
            if self.first:
                self.first = False
                both_sending.wait()
            sent_ids.append(message.id)
            return None

    engine = db.engine

    def sender():
        with Session(engine) as own_session:
            send_pending_mail(own_session, MeetingMailer(), now=NOW)

    threads = [threading.Thread(target=sender) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(sent_ids) == sorted(row.id for row in outbox(session))
    session.expire_all()
    assert {row.status for row in outbox(session)} == {"sent"}


def test_a_failing_provider_backs_off_then_parks_the_message_as_failed(
        session, ctx, make_patron):
    queue(session, ctx, "preferences_saved", patron=make_patron())
    session.commit()
    mailer = FailingMailer()

    assert send_pending_mail(session, mailer, now=NOW, max_attempts=3) == 0
    [row] = outbox(session)
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.available_at == NOW + timedelta(minutes=2)
    assert row.last_error == "ConnectionError: provider unreachable while sending to [address]"

    assert send_pending_mail(session, mailer, now=NOW + timedelta(minutes=1), max_attempts=3) == 0
    assert mailer.tries == 1  # not due yet
    later = NOW + timedelta(minutes=2)
    send_pending_mail(session, mailer, now=later, max_attempts=3)
    assert row.available_at == later + timedelta(minutes=4)
    send_pending_mail(session, mailer, now=later + timedelta(minutes=4), max_attempts=3)

    assert (row.status, row.attempts, mailer.tries) == ("failed", 3, 3)
    assert row.last_error.startswith("ConnectionError")
    assert row.to_address == ADDRESS  # kept, so staff can see and resend what never went out
    assert send_pending_mail(session, MemoryMailer(), now=NOW + timedelta(days=30)) == 0


def test_logs_name_messages_by_id_never_by_address(session, ctx, make_patron, caplog):
    patron = make_patron()
    queue(session, ctx, "preferences_saved", patron=patron)
    queue(session, ctx, "preferences_saved", patron=patron)
    session.commit()
    caplog.set_level(logging.DEBUG)

    send_pending_mail(session, FailingMailer(), now=NOW, limit=1, max_attempts=1)
    send_pending_mail(session, FailingMailer(), now=NOW, limit=1)
    send_pending_mail(session, MemoryMailer(), now=NOW + timedelta(hours=1))

    messages = [record.getMessage() for record in caplog.records]
    assert any("failed after 1 attempts" in m for m in messages)
    assert any("retrying" in m for m in messages)
    assert any(" sent" in m for m in messages)
    assert not [m for m in messages if ADDRESS in m or "reader@" in m]


def test_sendgrid_receives_patron_id_unsubscribe_group_and_one_click_headers(
        session, ctx, make_patron, events_topic):
    patron = make_patron()
    message = queue(session, ctx, "marketing_sample", patron=patron, topic=events_topic)
    session.commit()
    with FakeSendGrid() as fake:
        assert send_pending_mail(session, SendGridMailer(fake.api_key, fake.url), now=NOW) == 1
        violations = list(fake.violations)
        [body] = fake.sent_mail

    assert violations == []
    [recipient] = body["personalizations"]
    assert recipient["to"] == [{"email": ADDRESS}]
    assert recipient["custom_args"] == {"patron_id": patron.public_id}
    assert recipient["headers"] == {
        "List-Unsubscribe": message.headers["List-Unsubscribe"],
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "Message-ID": f"<outbox-{message.id}.{int(message.created_at.timestamp())}@example.org>",
    }
    assert body["asm"] == {"group_id": 4242}
    assert body["from"] == {"email": "library@example.org", "name": "Library"}
    assert sorted(body["categories"]) == ["marketing", "marketing_sample"]
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert message.status == "sent" and message.to_address is None


def test_sendgrid_refusal_is_retried_with_its_status(session, ctx, make_patron):
    queue(session, ctx, "preferences_saved", patron=make_patron())
    session.commit()
    with FakeSendGrid() as fake:
        fake.fail_next(1, status=500)
        mailer = SendGridMailer(fake.api_key, fake.url)
        assert send_pending_mail(session, mailer, now=NOW) == 0
        [row] = outbox(session)
        assert row.status == "pending" and "SendGrid answered 500" in row.last_error
        assert send_pending_mail(session, mailer, now=NOW + timedelta(hours=1)) == 1
        assert len(fake.sent_mail) == 1 and fake.violations == []


# -- choosing the mailer, and sending right after the request or command --------------------------


def test_an_unknown_mail_backend_stops_the_app_at_startup_with_one_line(tmp_path):
    with pytest.raises(MailConfigError) as raised:
        create_app(app_config(tmp_path, MAIL_BACKEND="carrier-pigeon"))
    assert str(raised.value) == (
        "CONSENT_MAIL_BACKEND must be one of file, memory, sendgrid, not 'carrier-pigeon'")


def test_sendgrid_backend_without_an_api_key_stops_the_app(tmp_path):
    with pytest.raises(MailConfigError, match="CONSENT_SENDGRID_API_KEY"):
        create_app(app_config(tmp_path, MAIL_BACKEND="sendgrid", SENDGRID_API_KEY=""))


def test_the_memory_mailer_is_one_per_app(app_factory):
    first, second = app_factory(), app_factory()
    assert mailer_for(first) is mailer_for(first)
    assert mailer_for(first) is not mailer_for(second)


def _add_mail_routes(app):
    """A page that queues a confirmation and commits; and one that fails after queueing."""
    from consent_service import runtime
    from consent_service.models import Patron

    bp = Blueprint("mail_test", __name__)

    def queue_for_first_patron():
        patron = db.session.scalar(select(Patron))
        queue(db.session, runtime.context(), "preferences_saved", patron=patron)

    @bp.post("/test/save")
    def save():
        queue_for_first_patron()
        db.session.commit()
        return "saved"

    @bp.post("/test/crash")
    def crash():
        queue_for_first_patron()
        db.session.flush()
        raise RuntimeError("the page failed before committing")

    csrf.exempt(bp)
    app.register_blueprint(bp)


def _add_patron(app):
    """A patron added outside the test's own application context, so that each request below has
    its own context and session, as in production."""
    from consent_service.models import Patron

    with app.app_context():
        db.session.add(Patron(card_number="21000001", email=ADDRESS, created_at=NOW,
                              updated_at=NOW))
        db.session.commit()


def _outbox_rows(app):
    with app.app_context():
        return [(row.status, row.to_address) for row in outbox(db.session)]


def test_mail_queued_by_a_page_is_sent_right_after_the_request(app):
    _add_mail_routes(app)
    _add_patron(app)
    response = app.test_client().post("/test/save")
    assert response.status_code == 200
    assert [m["To"] for m in mailer_for(app).sent] == [ADDRESS]
    assert _outbox_rows(app) == [("sent", None)]


def test_a_page_that_fails_after_queueing_sends_and_keeps_nothing(app):
    _add_mail_routes(app)
    _add_patron(app)
    with pytest.raises(RuntimeError):
        app.test_client().post("/test/crash")
    assert mailer_for(app).sent == []
    assert _outbox_rows(app) == []


def test_a_provider_failure_after_the_request_does_not_break_the_page(app):
    _add_mail_routes(app)
    _add_patron(app)
    app.extensions["consent_service.mailer"] = FailingMailer()
    response = app.test_client().post("/test/save")
    assert response.status_code == 200 and response.text == "saved"
    assert _outbox_rows(app) == [("pending", ADDRESS)]


def test_in_worker_mode_the_page_leaves_mail_to_the_worker(app_factory):
    app = app_factory(MAIL_DISPATCH="worker")
    _add_mail_routes(app)
    _add_patron(app)
    assert app.test_client().post("/test/save").status_code == 200
    assert mailer_for(app).sent == []
    assert _outbox_rows(app) == [("pending", ADDRESS)]


def test_mail_queued_by_a_command_is_sent_when_the_command_ends(app, make_patron):
    from consent_service import runtime

    patron = make_patron()

    @app.cli.command("mail-test")
    def mail_test():
        queue(db.session, runtime.context(), "preferences_saved", patron=patron)
        db.session.commit()
        click.echo(f"queued, sent so far: {len(mailer_for(app).sent)}")

    result = app.test_cli_runner().invoke(args=["mail-test"])
    assert result.exit_code == 0, result.output
    assert result.output == "queued, sent so far: 0\n"
    assert len(mailer_for(app).sent) == 1
    assert _outbox_rows(app) == [("sent", None)]

