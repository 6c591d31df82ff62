"""Time and peak memory of `export contacts` on a generated library, against a streaming baseline.

    .venv/bin/python benchmarks/export_benchmark.py --patrons 1000000 --repeat 3

Builds a fresh SQLite database in a temporary directory for each size (the `--flat-check` size,
100,000 by default, and `--patrons`), then runs each measurement in a subprocess of its own so that
the peak resident memory belongs to that run alone:

- `export`: the real `export_contacts` service, with an `--excluded` file, as the CLI calls it;
- `baseline`: the same kind of subprocess streaming a plain `select` of the same patron columns
  into a CSV file, with no eligibility, links or deduplication;
- `before` (with `--before REV`): the same `export` run, on the same database, with the
  `consent_service` package of git revision REV (extracted with `git archive`), to measure what a
  change cost in the same run.

Peak RSS is ru_maxrss from wait4 for that child. Linux carries the parent's high-water mark into a
child's ru_maxrss at exec, so this parent never imports the application and builds the database in
a subprocess too; each child also reports its own VmHWM (/proc/self/status) as a cross-check.

Prints the median wall time and peak RSS of each, the export/baseline ratio, and the RSS at both
sizes (flat memory means the export's peak RSS barely moves between them).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import hmac
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET_KEY = "benchmark-secret-key-0123456789abcdef"  # noqa: S105 - a throwaway database
ADDRESS_HASH_KEY = "benchmark-address-hash-key-0123456789"
BATCH = 20_000
SEED = 2026
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

FIRST_NAMES = ("Ana", "Ben", "Carmen", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal",
               "Kai", "Lucía", "Mateo", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tomás")
LAST_NAMES = ("Garcia", "Smith", "Martinez", "Nguyen", "Johnson", "Lopez", "Brown", "Hernandez",
              "Kim", "Davis", "Ortiz", "Wilson", "Romero", "Chavez", "Baker", "Sanchez")
CITIES = (("Castle Rock", "80104"), ("Parker", "80134"), ("Highlands Ranch", "80126"),
          ("Lone Tree", "80124"), ("Roxborough", "80125"))


def app_config(database: Path) -> dict[str, Any]:
    return {
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{database}",
        "SECRET_KEY": SECRET_KEY,
        "ADDRESS_HASH_KEY": ADDRESS_HASH_KEY,
        "PUBLIC_BASE_URL": "https://consent.example.org",
        "MAIL_BACKEND": "memory",
    }


# --- building the library ---------------------------------------------------------------------


def build_database(database: Path, patrons: int) -> dict[str, int]:
    """Create the schema and bulk-insert `patrons` generated patrons with a realistic mix: about 5%
    sharing an address with another patron, 8% children, 3% inactive, 5% without email, plus email,
    topic, postal and guardian decisions (projection rows with their ledger events), spam-report
    suppressions and bounces."""
    from sqlalchemy import event, insert

    from consent_service import create_app
    from consent_service.extensions import db
    from consent_service.models import (
        AddressDecision,
        AddressSuppression,
        ConsentEvent,
        Patron,
        PatronDecision,
        Topic,
        UndeliverableAddress,
    )

    app = create_app(app_config(database))
    rng = random.Random(SEED)
    secret = ADDRESS_HASH_KEY.encode("utf-8")
    stats = {"patrons": 0, "events": 0, "shared": 0, "children": 0, "inactive": 0, "no_email": 0}
    with app.app_context():
        @event.listens_for(db.engine, "connect")
        def _fast_load(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("PRAGMA synchronous=OFF")

        db.engine.dispose()
        db.create_all()
        session = db.session
        session.execute(insert(Topic), [{"key": "events", "name": "Events", "created_at": NOW}])

        households: list[str] = []  # emails that another patron may share
        event_id = 0
        decided_addresses: set[tuple[str, str]] = set()
        rows: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        patron_decisions: list[dict[str, Any]] = []
        address_decisions: list[dict[str, Any]] = []
        suppressions: list[dict[str, Any]] = []
        bounces: list[dict[str, Any]] = []

        def flush() -> None:
            for model, batch in ((Patron, rows), (ConsentEvent, events),
                                 (PatronDecision, patron_decisions),
                                 (AddressDecision, address_decisions),
                                 (AddressSuppression, suppressions),
                                 (UndeliverableAddress, bounces)):
                if batch:
                    session.execute(insert(model), batch)
                    batch.clear()
            session.commit()

        def decide(patron_id: int, key: str | None, purpose: str, topic: str, decision: str,
                   actor: str) -> None:
            nonlocal event_id
            event_id += 1
            at = NOW - timedelta(days=rng.randint(1, 900))
            events.append({
                "id": event_id, "patron_id": patron_id, "address_key": key, "purpose": purpose,
                "topic": topic, "decision": decision, "source": "staff_desk", "actor": actor,
                "occurred_at": at, "recorded_at": at, "effective": True, "evidence": {},
            })
            projection = {"purpose": purpose, "topic": topic, "decision": decision, "actor": actor,
                          "occurred_at": at, "event_id": event_id}
            patron_decisions.append({"patron_id": patron_id, **projection})
            if key is not None and (key, purpose + "/" + topic) not in decided_addresses:
                decided_addresses.add((key, purpose + "/" + topic))
                address_decisions.append({"address_key": key, **projection})

        for patron_id in range(1, patrons + 1):
            roll = rng.random()
            child = roll < 0.08
            if child:
                birth = NOW.date() - timedelta(days=rng.randint(365, 12 * 365))
            elif roll < 0.12:
                birth = NOW.date() - timedelta(days=rng.randint(13 * 365 + 4, 17 * 365))
            elif roll < 0.95:
                birth = date(rng.randint(1935, 2005), rng.randint(1, 12), rng.randint(1, 28))
            else:
                birth = None
            email: str | None = None
            if rng.random() >= 0.05:
                if households and rng.random() < 0.05:
                    email = rng.choice(households)
                    stats["shared"] += 1
                else:
                    email = f"patron{patron_id}@example.org"
                    if len(households) < 50_000:
                        households.append(email)
                    elif rng.random() < 0.1:
                        households[rng.randrange(len(households))] = email
            key = hmac.new(secret, email.encode(), hashlib.sha256).hexdigest() if email else None
            inactive = rng.random() < 0.03
            city, postal_code = rng.choice(CITIES)
            has_postal = rng.random() < 0.9
            rows.append({
                "id": patron_id,
                "public_id": f"p_{rng.getrandbits(96):024x}",
                "card_number": f"2{patron_id:013d}",
                "first_name": rng.choice(FIRST_NAMES),
                "last_name": rng.choice(LAST_NAMES),
                "email": email,
                "address_key": key,
                "birth_date": birth,
                "preferred_language": "es" if rng.random() < 0.15 else "en",
                "street": f"{rng.randint(1, 9999)} Main St" if has_postal else "",
                "city": city if has_postal else "",
                "state": "CO" if has_postal else "",
                "postal_code": postal_code if has_postal else "",
                "status": "inactive" if inactive else "active",
                "created_at": NOW,
                "updated_at": NOW,
            })
            stats["children"] += child
            stats["inactive"] += inactive
            stats["no_email"] += email is None

            if key is not None:
                roll = rng.random()
                if roll < 0.04:
                    decide(patron_id, key, "email_marketing", "", "opt_out", "patron")
                elif roll < 0.06:
                    decide(patron_id, key, "email_marketing", "events", "opt_out", "patron")
                elif child and roll < 0.5:
                    decide(patron_id, key, "email_marketing", "", "opt_in", "guardian")
                roll = rng.random()
                if roll < 0.003 and (key, "suppressed") not in decided_addresses:
                    decided_addresses.add((key, "suppressed"))
                    suppressions.append({"address_key": key, "reason": "spamreport",
                                         "suppressed_at": NOW - timedelta(days=3)})
                elif roll < 0.008 and (key, "bounced") not in decided_addresses:
                    decided_addresses.add((key, "bounced"))
                    bounces.append({"address_key": key, "reason": "bounce",
                                    "occurred_at": NOW - timedelta(days=2)})
            if rng.random() < 0.02:
                decide(patron_id, None, "postal_marketing", "", "opt_out", "staff")
            if len(rows) >= BATCH:
                flush()
        flush()
        stats["patrons"] = patrons
        stats["events"] = event_id
        db.session.remove()
        db.engine.dispose()
    return stats


# --- the measured runs (each in its own subprocess) -------------------------------------------


def child_export(database: Path, output: Path, purpose: str) -> dict[str, Any]:
    import consent_service
    from consent_service import create_app, runtime
    from consent_service.extensions import db
    from consent_service.services.export import export_contacts

    app = create_app(app_config(database))
    with app.app_context():
        started = time.perf_counter()
        manifest = export_contacts(
            db.session, runtime.context(app), purpose=purpose, topic=None, output=output,
            excluded=output.with_name("excluded.csv"), created_by="benchmark",
            now=datetime.now(UTC), chunk_size=app.config["EXPORT_CHUNK_SIZE"])
        seconds = time.perf_counter() - started
        return {"rows": manifest.row_count, "excluded": manifest.excluded_counts,
                "seconds": seconds, "code": str(Path(consent_service.__file__).parent)}


def child_baseline(database: Path, output: Path) -> dict[str, Any]:
    from sqlalchemy import select

    from consent_service import create_app
    from consent_service.extensions import db
    from consent_service.models import Patron

    columns = (  # what the export reads
        Patron.id, Patron.public_id, Patron.status, Patron.birth_date, Patron.email,
        Patron.address_key, Patron.first_name, Patron.last_name, Patron.preferred_language,
        Patron.street, Patron.city, Patron.state, Patron.postal_code)
    app = create_app(app_config(database))
    with app.app_context():
        started = time.perf_counter()
        rows = 0
        query = select(*columns).order_by(Patron.id).execution_options(yield_per=2000)
        with output.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow([column.key for column in columns])
            for row in db.session.execute(query):
                writer.writerow(row)
                rows += 1
        seconds = time.perf_counter() - started
        return {"rows": rows, "excluded": {}, "seconds": seconds}


@dataclass
class Run:
    mode: str
    patrons: int
    wall: float
    inside: float
    peak_rss_mib: float
    own_hwm_mib: float
    rows: int
    excluded: dict[str, int]


def own_peak_rss_mib() -> float:
    """This process's own resident high-water mark (VmHWM), which exec resets."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_child(mode: str, database: Path, workdir: Path, *extra: str,
              code: Path | None = None) -> tuple[dict[str, Any], float, float]:
    """Run this script in a fresh interpreter (with the package in `code`, else this checkout's);
    return its report, wall time and ru_maxrss (MiB)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", mode,
               "--database", str(database), *extra, *(["--code", str(code)] if code else [])]
    with (workdir / "child.out").open("w+b") as out, (workdir / "child.err").open("w+b") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{mode} run failed:\n{err.read().decode(errors='replace')}")
        out.seek(0)
        return json.loads(out.read()), wall, usage.ru_maxrss / 1024


def measure(mode: str, database: Path, workdir: Path, patrons: int, purpose: str,
            before: Path | None) -> Run:
    """One measured run; wall time and peak RSS are that subprocess's own. `before` runs the
    export with the package extracted there."""
    code = before if mode == "before" else None
    report, wall, peak = run_child("export" if mode == "before" else mode, database, workdir,
                                   "--output", str(workdir / f"{mode}.csv"), "--purpose", purpose,
                                   code=code)
    if code is not None and not report["code"].startswith(str(code)):
        raise SystemExit(f"the before run imported {report['code']}, not the code in {code}")
    return Run(mode, patrons, wall, report["seconds"], peak, report["own_hwm_mib"], report["rows"],
               report["excluded"])


def extract_revision(revision: str, into: Path) -> str:
    """Extract `consent_service/` of a git revision into `into`; return the commit it names."""
    commit = subprocess.run(["git", "rev-parse", "--short", f"{revision}^{{commit}}"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "archive", commit, "consent_service"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return commit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patrons", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--flat-check", type=int, default=100_000,
                        help="a smaller size also measured, to show memory does not grow (0: skip)")
    parser.add_argument("--purpose", default="email_marketing")
    parser.add_argument("--keep", action="store_true", help="keep the temporary databases")
    parser.add_argument("--before", metavar="REV",
                        help="also run the export of this git revision (e.g. main), to compare")
    parser.add_argument("--child", choices=["build", "export", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--database", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--code", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        if args.code:
            sys.path.insert(0, str(args.code))
        if args.child == "build":
            report = build_database(args.database, args.patrons)
        elif args.child == "export":
            report = child_export(args.database, args.output, args.purpose)
        else:
            report = child_baseline(args.database, args.output)
        print(json.dumps(report | {"own_hwm_mib": own_peak_rss_mib()}))
        return

    smaller = {args.flat_check} if 0 < args.flat_check < args.patrons else set()
    sizes = sorted({args.patrons} | smaller)
    modes = ("baseline", "before", "export") if args.before else ("baseline", "export")
    before: Path | None = None
    if args.before:
        before = Path(tempfile.mkdtemp(prefix="consent-export-before-"))
        commit = extract_revision(args.before, before)
        print(f"before: {args.before} = {commit}, extracted to {before}", flush=True)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPU(s), purpose {args.purpose}, "
          f"{args.repeat} run(s) each, sizes {', '.join(f'{n:,}' for n in sizes)}", flush=True)
    results: list[Run] = []
    for size in sizes:
        workdir = Path(tempfile.mkdtemp(prefix=f"consent-export-{size}-"))
        database = workdir / "consent.sqlite3"
        stats, wall, _ = run_child("build", database, workdir, "--patrons", str(size))
        del stats["own_hwm_mib"]
        print(f"built {size:,} patrons in {wall:.1f} s "
              f"({database.stat().st_size / 2**20:.0f} MiB): {stats}", flush=True)
        for attempt in range(args.repeat):
            for mode in modes:
                run = measure(mode, database, workdir, size, args.purpose, before)
                results.append(run)
                print(f"  {size:>9,} {mode:<8} run {attempt + 1}: {run.wall:7.1f} s wall, "
                      f"{run.inside:7.1f} s inside, peak RSS {run.peak_rss_mib:6.1f} MiB "
                      f"(own VmHWM {run.own_hwm_mib:6.1f}), "
                      f"{run.rows:,} rows", flush=True)
        last_export = [r for r in results if r.mode == "export" and r.patrons == size][-1]
        print(f"  left out: {json.dumps(last_export.excluded, sort_keys=True)}", flush=True)
        if args.keep:
            print(f"  kept {workdir}")
        else:
            shutil.rmtree(workdir)

    print()
    print(f"{'patrons':>10} | {'run':<8} | {'rows':>9} | {'median wall s':>13} | "
          f"{'median inside s':>15} | {'peak RSS MiB':>12}")
    print("-" * 84)
    medians: dict[tuple[int, str], tuple[float, float]] = {}
    if before is not None:
        shutil.rmtree(before)
    for size in sizes:
        for mode in modes:
            runs = [r for r in results if r.patrons == size and r.mode == mode]
            wall = statistics.median(r.wall for r in runs)
            inside = statistics.median(r.inside for r in runs)
            rss = max(r.peak_rss_mib for r in runs)
            medians[(size, mode)] = (wall, rss)
            print(f"{size:>10,} | {mode:<8} | {runs[-1].rows:>9,} | {wall:>13.1f} | "
                  f"{inside:>15.1f} | {rss:>12.1f}")
    print()
    for size in sizes:
        ratio = medians[(size, "export")][0] / medians[(size, "baseline")][0]
        print(f"{size:,} patrons: export takes {ratio:.1f}x the baseline's wall time")
        if args.before:
            inside = [statistics.median(r.inside for r in results
                                        if r.patrons == size and r.mode == mode)
                      for mode in ("before", "export")]
            wall_ratio = medians[(size, "export")][0] / medians[(size, "before")][0]
            print(f"{size:,} patrons: export takes {wall_ratio:.2f}x the wall time of "
                  f"{args.before} ({inside[1] / inside[0]:.2f}x inside the call)")
    if len(sizes) == 2:
        small, large = sizes
        print(f"export peak RSS: {medians[(small, 'export')][1]:.1f} MiB at {small:,} patrons, "
              f"{medians[(large, 'export')][1]:.1f} MiB at {large:,} "
              f"({large // small}x the patrons)")


if __name__ == "__main__":
    main()
