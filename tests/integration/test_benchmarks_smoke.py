"""The benchmark suite, small: every workload runs against its baseline at 10,000 patrons, so the
scripts never rot (the full run at a million is by hand, see benchmarks/README.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_URL = os.environ.get("CONSENT_TEST_DATABASE_URL", "")


@pytest.fixture
def bench_database_url() -> Iterator[str]:
    """"" (SQLite files of the suite's own) or, when the tests run on PostgreSQL, a database of its
    own beside the tests' (the suite drops every table of the database it is given)."""
    if not POSTGRES_URL:
        yield ""
        return
    import psycopg

    base, _, name = POSTGRES_URL.rpartition("/")
    bench = f"{name}_bench"
    admin = base.replace("postgresql+psycopg://", "postgresql://", 1) + "/" + name
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{bench}"')
        connection.execute(f'CREATE DATABASE "{bench}"')
    try:
        yield f"{base}/{bench}"
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{bench}" WITH (FORCE)')


def test_every_workload_runs_against_its_baseline_at_ten_thousand_patrons(
        tmp_path: Path, bench_database_url: str) -> None:
    results = tmp_path / "RESULTS.md"
    command = [sys.executable, "-m", "benchmarks", "--patrons", "10000", "--repeat", "1",
               "--duration", "2", "--clients", "4", "--batches", "5", "--events", "1000",
               "--results", str(results)]
    if bench_database_url:
        command += ["--database-url", bench_database_url]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    table = results.read_text(encoding="utf-8")
    database = "postgresql" if bench_database_url else "sqlite"
    for workload in ("import, 10,000 new", "import, same 10,000 again", "export, 10,000 patrons",
                     "webhook, 5,000 events", "one-click, 10,000 patrons",
                     "eligibility API, 10,000 patrons"):
        line = next((row for row in table.splitlines() if row.startswith(f"| {workload} |")), None)
        assert line is not None, f"{workload} missing from:\n{table}"
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[1] == database
        assert float(cells[4]) > 0, line  # a ratio: both ours and the baseline were measured
        if workload.startswith(("one-click", "eligibility")):
            assert "; 0 errors;" in line, line
