"""One command for the whole suite, or one workload: `python -m benchmarks [WORKLOAD ...] [options]`.

    .venv/bin/python -m benchmarks --patrons 1000000 --repeat 3                # SQLite, everything
    .venv/bin/python -m benchmarks import --patrons 100000                     # one workload
    .venv/bin/python -m benchmarks --database-url postgresql+psycopg://u@127.0.0.1:5433/bench

Workloads: import, export, webhook, oneclick, eligibility (default: all). Prints every run, then
each workload's median (min–max), its baseline's and the ratio, and writes the table to
`--results` (benchmarks/RESULTS.md by default; `--results -` writes none).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import suite
from benchmarks.harness import TABLE_HEADER, BenchmarkError, machine, write_results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("workloads", nargs="*", default=[], metavar="WORKLOAD",
                        help=f"any of {', '.join(suite.WORKLOADS)} (default: all)")
    parser.add_argument("--patrons", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (the median is kept)")
    parser.add_argument("--database-url", default="",
                        help="PostgreSQL (postgresql+psycopg://…); its tables are DROPPED. "
                             "Default: SQLite files in a temporary directory")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per HTTP run")
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients")
    parser.add_argument("--batches", type=int, default=100, help="webhook batches")
    parser.add_argument("--events", type=int, default=1000, help="events per webhook batch")
    parser.add_argument("--results", default=str(Path(__file__).parent / "RESULTS.md"),
                        help="where to write the table ('-': nowhere)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.workloads) - set(suite.WORKLOADS))
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(suite.WORKLOADS)}")
    workloads = [w for w in suite.WORKLOADS if w in args.workloads] or list(suite.WORKLOADS)

    workdir = Path(tempfile.mkdtemp(prefix="consent-bench-"))
    settings = suite.Settings(args.patrons, args.repeat, args.database_url, workdir, args.duration,
                              args.clients, args.batches, args.events)
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = machine()
    print("\n".join(header), flush=True)
    print(f"{args.patrons:,} patrons, {args.repeat} run(s) each, {settings.kind}, workloads "
          f"{', '.join(workloads)}, in {workdir}", flush=True)
    try:
        rows = suite.run(settings, workloads)
        version = suite.postgres_version(args.database_url, workdir)
    except BenchmarkError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(TABLE_HEADER)
    for row in rows:
        print(row.line())
    if args.results != "-":
        shown = [a if "@" not in a else "<database-url>" for a in (argv or sys.argv[1:])]
        command = " ".join(["python -m benchmarks", *map(shlex.quote, shown)])
        write_results(Path(args.results), settings.kind, command, started, rows, header, version)
        print(f"\nwritten to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
