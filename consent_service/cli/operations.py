"""Running the service: the background worker and the demo data."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from consent_service import runtime
from consent_service.cli.common import one_line_errors
from consent_service.extensions import configure_migrations, db


@click.command("worker")
@with_appcontext
@click.option("--idle-seconds", type=float, default=5.0, show_default=True,
              help="How long to wait after a round that found nothing to do.")
@click.option("--once", is_flag=True, help="Run one round, then exit (for cron or a check).")
def worker(idle_seconds: float, once: bool) -> None:
    """Send queued mail, push suppression changes to SendGrid, and retry webhook batches whose
    processing failed, until stopped (SIGTERM finishes the current item first). Without a SendGrid
    API key, suppression changes wait in the outbox until one is configured."""
    from consent_service.delivery.worker import run_worker, worker_tasks

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    tasks, warnings = worker_tasks(app)
    for warning in warnings:
        click.echo(warning, err=True)
    run_worker(app, tasks=tasks, idle_seconds=idle_seconds, stop=lambda: False,
               max_rounds=1 if once else None)


@click.command("demo")
@with_appcontext
def demo() -> None:
    """Create the database if needed and load demo patrons, topics and decisions that show the rules."""
    from flask_migrate import upgrade

    from consent_service.services.demo import load_demo

    configure_migrations(current_app._get_current_object())  # type: ignore[attr-defined]
    with one_line_errors():
        upgrade()
        for line in load_demo(db.session, runtime.context(), now=runtime.now(),
                              flask_command=_flask_command()):
            click.echo(line)


def _flask_command() -> str:
    """How to run `flask --app consent_service` as this process was run: plain `flask` when it is
    on PATH (an activated virtual environment), else the path of this environment's `flask`."""
    mine = Path(sys.executable).with_name("flask")
    on_path = shutil.which("flask")
    if on_path is not None and Path(on_path).resolve() == mine.resolve():
        return "flask --app consent_service"
    relative = os.path.relpath(mine)
    shown = relative if not relative.startswith("..") else str(mine)
    return f"{shlex.quote(shown)} --app consent_service"
