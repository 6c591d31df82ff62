"""What every command shares: one-line errors (never a traceback), command groups that use them,
and running a CSV import with a progress bar."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from flask import has_app_context
from flask.cli import AppGroup
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from consent_service import runtime
from consent_service.domain import ConsentServiceError
from consent_service.extensions import db


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn the service's errors into one line and a non-zero exit, never a traceback. Nothing is left
    half-written: use cases commit once, and the session is rolled back here (or by the app context's
    teardown, when the error leaves the command's context first)."""
    try:
        yield
    except ConsentServiceError as exc:
        _rollback()
        raise click.ClickException(str(exc)) from None
    except OperationalError as exc:
        _rollback()
        raise click.ClickException(f"database unreachable or not ready: {_first_line(exc)}") from None
    except SQLAlchemyError as exc:
        _rollback()
        raise click.ClickException(f"database error, nothing was written: {_first_line(exc)}") from None
    except OSError as exc:
        _rollback()
        where = f": {exc.filename}" if exc.filename else ""
        raise click.ClickException(f"{exc.strerror or exc}{where}") from None


def _rollback() -> None:
    if has_app_context():
        db.session.rollback()


class ServiceGroup(AppGroup):
    """A command group whose commands fail with `one_line_errors`."""

    def invoke(self, ctx: click.Context) -> Any:
        with one_line_errors():
            return super().invoke(ctx)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def progress(path: Path, label: str) -> Iterator[Callable[[], None]]:
    """A progress bar over the data rows of a CSV file, shown only on a terminal."""
    with path.open("rb") as counted:
        total = max(sum(1 for _ in counted) - 1, 0)
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        yield lambda: bar.update(1)


def run_import(importer: Callable[..., Any], file: Path, skip_invalid: bool, allow_partial: bool,
                label: str) -> None:
    """Run a CSV import with a progress bar; print the notes on its columns, each problem with its
    line, then the summary."""
    with progress(file, label) as tick:
        report = importer(db.session, runtime.context(), file, now=runtime.now(),
                          skip_invalid=skip_invalid, allow_partial=allow_partial, on_row=tick)
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    for problem in report.problems:
        click.echo(f"line {problem.line}: {problem.message}", err=True)
    click.echo(report.summary())
    if report.problems and not skip_invalid:
        raise click.ClickException(f"{len(report.problems)} invalid row(s); nothing was written")
