"""`patrons show`, `links …` and `topics add` as staff and other systems use them."""

from __future__ import annotations

import json
from datetime import date
from urllib.parse import urlsplit

from consent_service.domain.tokens import LinkKind
from consent_service.models import Topic


def invoke(runner, *args):
    return runner.invoke(args=list(args), catch_exceptions=False)


def test_topics_add_then_update_and_refuse_a_taken_group(runner, session):
    added = invoke(runner, "topics", "add", "events", "--name", "Events", "--sendgrid-group", "101")
    assert added.exit_code == 0
    result = invoke(runner, "topics", "add", "events", "--name", "Events & programs")
    assert result.exit_code == 0 and "Events & programs" in result.output
    taken = invoke(runner, "topics", "add", "news", "--name", "News", "--sendgrid-group", "101")
    assert taken.exit_code == 1
    assert taken.output.strip() == "Error: SendGrid group 101 already belongs to topic 'events'"
    bad = invoke(runner, "topics", "add", "Bad Key!", "--name", "x")
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert [t.key for t in session.query(Topic)] == ["events"]


def test_patrons_show_gives_decisions_and_eligibility_without_personal_data(runner, make_patron):
    patron = make_patron(card="21000077", email="kid@example.org", birth_date=date(2018, 3, 1))
    invoke(runner, "topics", "add", "events", "--name", "Events")
    result = invoke(runner, "patrons", "show", "21000077")
    assert result.exit_code == 0
    shown = json.loads(result.output)
    assert shown["patron_id"] == patron.public_id
    assert "kid@example.org" not in result.output and "21000077" not in result.output
    verdicts = {(e["purpose"], e["topic"]): e for e in shown["eligibility"]}
    assert verdicts[("email_marketing", "events")] == {
        "purpose": "email_marketing", "topic": "events", "allowed": False,
        "reason": "guardian_consent_required"}
    assert len(verdicts) == 9  # eight purposes and one topic


def test_patrons_show_unknown_card_is_one_line(runner):
    result = invoke(runner, "patrons", "show", "nope")
    assert result.exit_code == 1
    assert result.output == "Error: no patron with card number 'nope'\n"


def test_links_print_one_absolute_url_that_opens_its_own_kind(runner, ctx, make_patron):
    patron = make_patron(card="21000088")
    invoke(runner, "topics", "add", "events", "--name", "Events")
    for kind, extra in ((LinkKind.UNSUBSCRIBE, ["--topic", "events"]), (LinkKind.PREFERENCES, [])):
        result = invoke(runner, "links", kind.value, "21000088", *extra)
        assert result.exit_code == 0 and result.output.count("\n") == 1
        url = urlsplit(result.output.strip())
        assert (url.scheme, url.netloc) == ("https", "consent.example.org")
        _, path_kind, token = url.path.split("/")
        assert path_kind == kind.value
        claims = ctx.signer.verify(kind, token)
        assert claims.patron_id == patron.public_id
    unknown = invoke(runner, "links", "unsubscribe", "21000088", "--topic", "nope")
    assert unknown.exit_code == 1 and "unknown topic 'nope'" in unknown.output


def test_a_topic_has_a_spanish_name_that_spanish_pages_show(runner, client, ctx, make_patron):
    added = invoke(runner, "topics", "add", "kids", "--name", "Kids & teens",
                   "--name-es", "Niños y jóvenes")
    assert added.output == "topic kids: Kids & teens / Niños y jóvenes (SendGrid group none)\n"
    invoke(runner, "topics", "add", "kids", "--name", "Kids and teens")  # Spanish name kept
    lucia = make_patron(card="21000099", email="lucia@example.org", preferred_language="es")
    preferences = client.get(urlsplit(ctx.link(LinkKind.PREFERENCES, lucia.public_id)).path)
    unsubscribe = client.get(urlsplit(ctx.link(LinkKind.UNSUBSCRIBE, lucia.public_id, "kids")).path)
    english = client.get(urlsplit(ctx.link(LinkKind.PREFERENCES, lucia.public_id)).path + "?lang=en")

    assert "Niños y jóvenes" in preferences.text and "Kids and teens" not in preferences.text
    assert "Cancelar la suscripción a Niños y jóvenes" in unsubscribe.text
    assert "Kids and teens" in english.text and "Niños y jóvenes" not in english.text


def test_an_unknown_topic_names_the_known_ones(runner, make_patron):
    invoke(runner, "topics", "add", "events", "--name", "Events")
    invoke(runner, "topics", "add", "news", "--name", "News")
    result = invoke(runner, "export", "contacts", "--purpose", "email_marketing", "--topic", "kids")
    assert result.exit_code == 1
    assert result.output == ("Error: unknown topic 'kids'; the topics are: events, news "
                             "(add one with `topics add`)\n")


def test_the_home_page_says_what_the_service_is_and_where_each_person_goes(client):
    page = client.get("/")
    assert page.status_code == 200
    for words in ("Patrons", "Parents and guardians", "Library staff", 'href="/preferences"'):
        assert words in page.text
