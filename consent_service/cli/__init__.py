"""`flask --app consent_service …` commands: thin over the services; a one-line reason on failure.

One module per command group: `records` (patrons, consents, topics, export, links), `guardians`,
`sendgrid`, `staff`, `policies`, `operations` (worker, demo),
`privacy` (ledger, retention); `common` has what they share."""

from __future__ import annotations

from flask import Flask

from consent_service.cli.apikeys import apikeys
from consent_service.cli.guardians import guardians
from consent_service.cli.operations import demo, worker
from consent_service.cli.policies import policy
from consent_service.cli.privacy import ledger, retention
from consent_service.cli.records import consents, export, links, patrons, topics
from consent_service.cli.sendgrid import sendgrid
from consent_service.cli.staff import staff


def register(app: Flask) -> None:
    for group in (patrons, consents, topics, export, links, sendgrid, guardians, staff, apikeys,
                  policy, ledger, retention):
        app.cli.add_command(group)
    app.cli.add_command(demo)
    app.cli.add_command(worker)
