"""The measured subprocesses and their helpers: `python -m benchmarks.child MODE JSON-ARGS`.

Each mode prints one JSON line (its report) last. The baselines use the database driver alone
(sqlite3 or psycopg), no SQLAlchemy or application code: they are the floor the database and the
`csv` module set on this machine.
"""

from __future__ import annotations

import csv
import json
import secrets
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

PATRON_COLUMNS = ("card_number", "public_id", "first_name", "last_name", "email", "address_key",
                  "birth_date", "preferred_language", "street", "city", "state", "postal_code",
                  "status", "created_at", "updated_at")
EXPORT_COLUMNS = ("id", "public_id", "status", "birth_date", "email", "address_key", "first_name",
                  "last_name", "preferred_language", "street", "city", "state", "postal_code")


def connect(database_url: str) -> tuple[Any, str]:
    """A DBAPI connection for a SQLAlchemy URL, and its parameter style's placeholder."""
    if database_url.startswith("sqlite:///"):
        import sqlite3
        return sqlite3.connect(database_url.removeprefix("sqlite:///")), "?"
    import psycopg
    plain = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    return psycopg.connect(plain), "%s"


def import_baseline(database_url: str, path: str) -> dict[str, Any]:
    """The file's rows inserted, or upserted by card number, in one transaction: SQLite with
    `executemany`, PostgreSQL with COPY into a staging table and `INSERT … ON CONFLICT`. Each row
    gets what a stored patron needs (address key, public id, times), as the import gives it."""
    from benchmarks.library import address_key

    started = time.perf_counter()
    now = datetime.now(UTC)
    connection, mark = connect(database_url)
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            email = record["email"].strip().lower() or None
            rows.append((
                record["card_number"], "p_" + secrets.token_urlsafe(12), record["first_name"],
                record["last_name"], email, address_key(email) if email else None,
                date.fromisoformat(record["birth_date"]) if record["birth_date"] else None,
                record["preferred_language"] or "en", record["street"], record["city"],
                record["state"], record["postal_code"], record["status"] or "active", now, now))
    columns = ", ".join(PATRON_COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in PATRON_COLUMNS
                        if c not in ("card_number", "public_id", "created_at"))
    if mark == "?":
        connection.executemany(
            f"INSERT INTO patrons ({columns}) VALUES ({', '.join('?' * len(PATRON_COLUMNS))}) "
            f"ON CONFLICT (card_number) DO UPDATE SET {updates}",
            [(*row[:6], row[6].isoformat() if row[6] else None, *row[7:13],
              row[13].isoformat(sep=" "), row[14].isoformat(sep=" ")) for row in rows])
    else:
        with connection.cursor() as cursor:
            cursor.execute("CREATE TEMP TABLE staging (LIKE patrons INCLUDING DEFAULTS) "
                           "ON COMMIT DROP")
            with cursor.copy(f"COPY staging ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(f"INSERT INTO patrons ({columns}) SELECT {columns} FROM staging "
                           f"ON CONFLICT (card_number) DO UPDATE SET {updates}")
    connection.commit()
    connection.close()
    return {"rows": len(rows), "seconds": time.perf_counter() - started}


def export_baseline(database_url: str, output: str) -> dict[str, Any]:
    """A plain SELECT of the columns the export reads, in id order, streamed to `csv.writer`."""
    started = time.perf_counter()
    connection, _ = connect(database_url)
    count = 0
    query = f"SELECT {', '.join(EXPORT_COLUMNS)} FROM patrons ORDER BY id"
    with open(output, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(EXPORT_COLUMNS)
        if database_url.startswith("sqlite"):
            cursor = connection.execute(query)
        else:
            cursor = connection.cursor(name="export")  # server-side: streamed, not all in memory
            cursor.itersize = 2000
            cursor.execute(query)
        while batch := cursor.fetchmany(2000):
            writer.writerows(batch)
            count += len(batch)
    connection.close()
    return {"rows": count, "seconds": time.perf_counter() - started}


def prepare_http(database_url: str, links: int, out: str) -> dict[str, Any]:
    """What the HTTP clients need, written to `out` as JSON: one-click unsubscribe links (for the
    `events` topic) and preference-center links of `links` patrons with email spread over the
    library, cards to ask eligibility about, and an API key with `consents:read`; plus the baseline
    webhook endpoint's table."""
    from sqlalchemy import func, select, text

    from benchmarks.harness import PUBLIC_BASE_URL
    from consent_service import create_app, runtime
    from consent_service.domain.tokens import LinkKind
    from consent_service.extensions import db
    from consent_service.models import Patron
    from consent_service.services.api_keys import create_api_key

    app = create_app()
    with app.app_context():
        ctx = runtime.context(app)
        total = db.session.scalar(select(func.max(Patron.id))) or 0
        step = max(1, total // links)
        rows = db.session.execute(
            select(Patron.public_id, Patron.card_number).where(
                Patron.email.is_not(None), (Patron.id % step) == 0).limit(links)).all()
        tokens = [ctx.link(LinkKind.UNSUBSCRIBE, public_id, "events").removeprefix(PUBLIC_BASE_URL)
                  for public_id, _ in rows]
        preferences = [ctx.link(LinkKind.PREFERENCES, public_id).removeprefix(PUBLIC_BASE_URL)
                       for public_id, _ in rows]
        cards = [card for _, card in rows]
        _, key = create_api_key(db.session, f"benchmark-{secrets.token_hex(4)}", ["consents:read"],
                                now=datetime.now(UTC))
        db.session.execute(text("DROP TABLE IF EXISTS bench_webhook_events"))
        db.session.execute(text(
            "CREATE TABLE bench_webhook_events (sg_event_id VARCHAR(100), email VARCHAR(320), "
            "event VARCHAR(40), occurred_at TIMESTAMP, asm_group_id INTEGER)"))
        db.session.commit()
    Path(out).write_text(json.dumps({"unsubscribe_paths": tokens, "preference_paths": preferences,
                                     "cards": cards, "api_key": key}))
    return {"links": len(tokens)}


def count_rows(database_url: str, table: str, where: str = "") -> dict[str, Any]:
    connection, _ = connect(database_url)
    cursor = connection.cursor()
    cursor.execute(f"SELECT count(*) FROM {table} {where}")
    (count,) = cursor.fetchone()
    connection.close()
    return {"count": count}


def main() -> None:
    mode, args = sys.argv[1], json.loads(sys.argv[2])
    from benchmarks import library

    if mode == "build-library":
        report: dict[str, Any] = library.load_library(args["url"], args["patrons"])
    elif mode == "schema":
        library.create_schema(args["url"])
        report = {}
    elif mode == "write-csv":
        report = library.write_import_csv(Path(args["path"]), args["patrons"])
    elif mode == "import-baseline":
        report = import_baseline(args["url"], args["path"])
    elif mode == "export-baseline":
        report = export_baseline(args["url"], args["output"])
    elif mode == "prepare-http":
        report = prepare_http(args["url"], args["links"], args["out"])
    elif mode == "drop-bench-tables":  # the baseline webhook's table is no table of the service
        connection, _ = connect(args["url"])
        connection.execute("DROP TABLE IF EXISTS bench_webhook_events")
        connection.commit()
        connection.close()
        report = {}
    elif mode == "pg-version":
        connection, _ = connect(args["url"])
        report = {"version": connection.execute("SELECT version()").fetchone()[0]}
        connection.close()
    elif mode == "count":
        report = count_rows(args["url"], args["table"], args.get("where", ""))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
