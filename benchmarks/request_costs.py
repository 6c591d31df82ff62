"""What one request costs in-process, CPU time and statements, from "hello world" up to one-click
and the eligibility API, to show where the served workloads' time goes (the gunicorn runs give
only the totals). Run on a library the suite built (`--keep` keeps it):

    .venv/bin/python -m benchmarks.request_costs sqlite:////tmp/consent-bench-…/library.sqlite3 \
        /tmp/consent-bench-…/http.json

Each line: a route, CPU milliseconds per request (median of 5 rounds of N requests through
Flask's test client, which adds about what gunicorn's request parsing does) and statements per
request. The steps: `hello` (Flask alone), `session` (+ one `SELECT 1` through the request's
session and its teardown), `patron` (+ one patron read by card through the ORM), `page` (+ the
unsubscribe confirmation rendered for that patron, no database), then the real routes. A one-click
link is clicked once before it is timed, so `one-click` is the repeated click (nothing written);
`one-click, new` clicks links never clicked (one ledger write and commit each).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import app_environment


def main(database_url: str, plan_path: str, requests: int = 200) -> None:
    os.environ.update(app_environment(database_url))
    from flask import Response, render_template
    from sqlalchemy import event, select, text

    from consent_service import create_app, runtime
    from consent_service.domain.tokens import LinkKind
    from consent_service.extensions import csrf, db
    from consent_service.models import Patron
    from consent_service.services.unsubscribe import open_unsubscribe_link

    app = create_app()
    plan = json.loads(Path(plan_path).read_text())
    paths, cards = plan["unsubscribe_paths"], plan["cards"]
    statements = [0]
    with app.app_context():
        event.listen(db.engine, "before_cursor_execute",
                     lambda *_: statements.__setitem__(0, statements[0] + 1))
        fresh = ["/unsubscribe/" + runtime.context(app).signer.sign(
            LinkKind.UNSUBSCRIBE, public_id, "events") for public_id in db.session.scalars(
                select(Patron.public_id).where(Patron.email.is_not(None))
                .order_by(Patron.id.desc()).limit(6 * requests))]

    def hello() -> Response:
        return Response("hello world", mimetype="text/plain")

    def session() -> Response:
        db.session.execute(text("SELECT 1"))
        return Response("hello world", mimetype="text/plain")

    def patron() -> Response:
        db.session.scalar(select(Patron).where(Patron.card_number == cards[0]))
        return Response("hello world", mimetype="text/plain")

    token = paths[0].rsplit("/", 1)[1]
    with app.test_request_context(paths[0]):
        link = open_unsubscribe_link(db.session, runtime.context(), token, now=runtime.now())

    def page() -> str:
        return render_template("public/unsubscribed.html", link=link, since=None, form=None,
                               preferences_url="/preferences/x")

    for name, view in (("hello", hello), ("session", session), ("patron", patron),
                       ("page", page)):
        app.add_url_rule(f"/cost/{name}", f"cost_{name}", csrf.exempt(view), methods=["POST"])
    client = app.test_client()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    auth = {"Authorization": f"Bearer {plan['api_key']}"}
    one_click = b"List-Unsubscribe=One-Click"
    for path in paths[:requests]:
        client.post(path, data=one_click, headers=form)
    new = iter(fresh)
    routes: list[tuple[str, Callable[[int], Any]]] = [
        (name, lambda i, name=name: client.post(f"/cost/{name}", data=one_click, headers=form))
        for name in ("hello", "session", "patron", "page")]
    routes += [
        ("eligibility API", lambda i: client.get(
            f"/api/v1/eligibility?card_number={cards[i % len(cards)]}&purpose=email_marketing"
            "&topic=events", headers=auth)),
        ("one-click", lambda i: client.post(paths[i % requests], data=one_click, headers=form)),
        ("one-click, new", lambda i: client.post(next(new), data=one_click, headers=form)),
    ]
    print(f"{'route':<16} {'CPU ms/request':>14} {'statements':>10}")
    for name, call in routes:
        rounds = []
        for _ in range(5):
            statements[0] = 0
            started = time.process_time()
            for i in range(requests):
                answer = call(i)
                assert answer.status_code == 200, (name, answer.status_code)
            rounds.append((time.process_time() - started) * 1000 / requests)
        print(f"{name:<16} {statistics.median(rounds):14.2f} {statements[0] / requests:10.1f}",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(arg) for arg in sys.argv[3:4]))
