"""What every command shares: one-line errors (never a traceback), command groups that use them,
and running a CSV import with a progress bar."""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Callable, Iterator, Sequence
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


SHOWN_PROBLEMS = 20  # invalid lines printed; a file beside the input lists them all


@contextmanager
def progress_bar(total: int, label: str, unit: str,
                 measure: Callable[[], int] | None = None) -> Iterator[Callable[[int], None]]:
    """A progress bar with a rate and an estimate of the time left, on standard error when it is a
    terminal; elsewhere (cron, CI) nothing at all, so that only the final summary is printed. Yields
    `advance(n)`. The rate is of the bar's steps, or of `measure()` `unit`s when the steps are
    coarser than what is counted (SendGrid's lists, and the entries read from them)."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    started = time.monotonic()

    def rate(_: object) -> str:
        elapsed = time.monotonic() - started
        done = measure() if measure is not None else bar.pos
        return f"{done:,} {unit}, {done / elapsed:,.0f}/s" if elapsed > 0 else ""

    bar = click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True,
                            item_show_func=rate)
    with bar:
        yield bar.update


def run_import(importer: Callable[..., Any], file: Path, skip_invalid: bool, allow_partial: bool,
               label: str, **options: Any) -> None:
    """Run a CSV import with a progress bar; print the notes on its columns, the invalid lines (the
    first SHOWN_PROBLEMS, and all of them in a file beside the input when there are more), then
    the summary."""
    with file.open("rb") as counted:
        total = max(sum(1 for _ in counted) - 1, 0)
    with progress_bar(total, label, "rows") as advance:
        report = importer(db.session, runtime.context(), file, now=runtime.now(),
                          skip_invalid=skip_invalid, allow_partial=allow_partial,
                          on_row=lambda: advance(1), **options)
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    for problem in report.problems[:SHOWN_PROBLEMS]:
        click.echo(f"line {problem.line}: {problem.message}", err=True)
    if len(report.problems) > SHOWN_PROBLEMS:
        click.echo(_all_problems(file, report.problems), err=True)
    click.echo(report.summary())
    if report.problems and not skip_invalid:
        raise click.ClickException(f"{len(report.problems)} invalid row(s); nothing was written")


def _all_problems(file: Path, problems: Sequence[Any]) -> str:
    """Write every invalid line to `<file>.problems.csv` (line,problem) beside the input; say where
    (or, when it cannot be written, print them all)."""
    target = file.with_name(f"{file.name}.problems.csv")
    try:
        with target.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(("line", "problem"))
            writer.writerows((problem.line, problem.message) for problem in problems)
    except OSError as exc:
        rest = "\n".join(f"line {problem.line}: {problem.message}"
                         for problem in problems[SHOWN_PROBLEMS:])
        return f"{rest}\n(could not write {target}: {exc.strerror})"
    return f"... and {len(problems) - SHOWN_PROBLEMS} more: all {len(problems)} invalid lines are " \
           f"listed in {target}"
