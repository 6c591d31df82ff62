"""What every workload shares: measured subprocesses, medians with min/max, the results table.

The parent process (`python -m benchmarks`) never imports the application: Linux carries a parent's
resident high-water mark into a child's `ru_maxrss` at exec, so every measured run is a subprocess
of its own (`python -m benchmarks.child MODE`) and its peak RSS is that child's alone.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = "benchmark-secret-key-0123456789abcdef"  # noqa: S105 - a throwaway database
ADDRESS_HASH_KEY = "benchmark-address-hash-key-0123456789"
PUBLIC_BASE_URL = "https://consent.example.org"


class BenchmarkError(Exception):
    """A run that failed or gave a wrong answer: a benchmark of failures would be no benchmark."""


def app_environment(database_url: str, **extra: str) -> dict[str, str]:
    """The CONSENT_* variables every child and the gunicorn server run with."""
    return {
        "CONSENT_DATABASE_URL": database_url,
        "CONSENT_SECRET_KEY": SECRET_KEY,
        "CONSENT_ADDRESS_HASH_KEY": ADDRESS_HASH_KEY,
        "CONSENT_PUBLIC_BASE_URL": PUBLIC_BASE_URL,
        "CONSENT_MAIL_BACKEND": "memory",
        "CONSENT_MAIL_DISPATCH": "worker",  # queued in the outbox, as in production
        **extra,
    }


@dataclass(frozen=True)
class ChildRun:
    """One measured subprocess: its JSON report, wall time (interpreter start-up included) and
    peak RSS in MiB (ru_maxrss from wait4)."""

    report: dict[str, Any]
    wall: float
    peak_rss_mib: float

    @property
    def seconds(self) -> float:
        """Time inside the measured call (the child's own clock), else the wall time."""
        return float(self.report.get("seconds", self.wall))


def run_child(mode: str, args: dict[str, Any], workdir: Path, env: dict[str, str]) -> ChildRun:
    """Run `python -m benchmarks.child MODE` with `args` (JSON) in a fresh interpreter."""
    return run_measured([sys.executable, "-m", "benchmarks.child", mode, json.dumps(args)],
                        mode, workdir, env, json_report=True)


def run_flask(arguments: list[str], name: str, workdir: Path, env: dict[str, str]) -> ChildRun:
    """Run `flask --app consent_service ARGUMENTS`, the command a library runs; its last line of
    output is the report's `summary`."""
    return run_measured([sys.executable, "-m", "flask", "--app", "consent_service", *arguments],
                        name, workdir, env, json_report=False)


def run_measured(command: list[str], name: str, workdir: Path, env: dict[str, str], *,
                 json_report: bool) -> ChildRun:
    environment = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    with (workdir / f"{name}.out").open("w+b") as out, (workdir / f"{name}.err").open("w+b") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, cwd=ROOT, env=environment)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        if process.returncode != 0:
            err.seek(0)
            raise BenchmarkError(f"{name} failed:\n{err.read().decode(errors='replace')[-3000:]}")
        out.seek(0)
        err.seek(0)
        lines = out.read().decode().strip().splitlines() or [""]
        said = err.read().decode(errors="replace").strip().splitlines() or [""]
        report = json.loads(lines[-1]) if json_report else {"summary": lines[-1] or said[-1]}
        return ChildRun(report, wall, usage.ru_maxrss / 1024)


@dataclass
class Figure:
    """One measured quantity over the repeats: each run's value, summarised as min/median/max."""

    unit: str
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def text(self) -> str:
        if not self.values:
            return "-"
        if len(self.values) == 1:
            return f"{_number(self.values[0])} {self.unit}"
        return (f"{_number(self.median)} {self.unit} "
                f"({_number(min(self.values))}–{_number(max(self.values))})")


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


@dataclass
class Row:
    """One line of the results table: our figure, the baseline's, the ratio and the target.

    `higher_is_better` says whether the figures are rates (ratio = ours / baseline) or times
    (ratio = baseline / ours); either way a ratio of 1 means as fast as the baseline."""

    workload: str
    database: str
    ours: Figure
    baseline: Figure
    higher_is_better: bool
    target: float | None = None
    memory: Figure | None = None
    memory_limit: float | None = None
    latency: dict[str, Figure] = field(default_factory=dict)
    latency_limit_ms: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        if not self.ours.values or not self.baseline.values:
            return float("nan")
        if self.higher_is_better:
            return self.ours.median / self.baseline.median
        return self.baseline.median / self.ours.median

    @property
    def met(self) -> bool:
        ok = self.target is None or self.ratio >= self.target
        if self.memory is not None and self.memory_limit is not None:
            ok = ok and max(self.memory.values) < self.memory_limit
        p99 = self.latency.get("p99")
        if p99 is not None and self.latency_limit_ms is not None:
            ok = ok and p99.median < self.latency_limit_ms
        return ok

    def line(self) -> str:
        target = f"≥ {self.target:.2f}" if self.target is not None else ""
        if self.memory_limit is not None:
            target += f", peak < {self.memory_limit:.0f} MiB"
        if self.latency_limit_ms is not None:
            target += f", p99 < {self.latency_limit_ms:.0f} ms"
        extra = []
        if self.memory is not None:
            extra.append(f"peak RSS {self.memory.text()}")
        extra.extend(f"{name} {figure.text()}" for name, figure in self.latency.items())
        extra.extend(self.notes)
        return (f"| {self.workload} | {self.database} | {self.ours.text()} | {self.baseline.text()} "
                f"| {self.ratio:.2f} | {target} | {'yes' if self.met else '**no**'} "
                f"| {'; '.join(extra)} |")


TABLE_HEADER = ("| workload | database | ours: median (min–max) | baseline: median (min–max) | ratio "
                "| target | met | also measured |\n| --- | --- | --- | --- | --- | --- | --- | --- |")


def print_row(row: Row) -> None:
    print(f"  => {row.workload} [{row.database}]: ours {row.ours.text()}, baseline "
          f"{row.baseline.text()}, ratio {row.ratio:.2f}"
          + (f" (target ≥ {row.target:.2f})" if row.target is not None else "")
          + (f", peak RSS {row.memory.text()}" if row.memory is not None else "")
          + "".join(f", {name} {figure.text()}" for name, figure in row.latency.items()),
          flush=True)


def machine() -> list[str]:
    """What the figures were measured on."""
    lines = [f"- python {platform.python_version()} on {platform.platform()}, "
             f"{os.cpu_count()} CPU(s), load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}"
             " at the start"]
    try:
        model = next(line.split(":", 1)[1].strip()
                     for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
        lines.append(f"- CPU: {model}")
    except (OSError, StopIteration):
        pass
    try:
        total = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal"))
        lines.append(f"- memory: {total / 2**20:.1f} GiB")
    except (OSError, StopIteration):
        pass
    versions = []
    for package in ("sqlalchemy", "flask", "psycopg", "gunicorn"):
        try:
            versions.append(f"{package} {version(package)}")
        except PackageNotFoundError:  # not installed: not listed
            continue
    import sqlite3
    versions.append(f"SQLite {sqlite3.sqlite_version}")
    lines.append("- " + ", ".join(versions))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "consent_service", "benchmarks",
                            ":!benchmarks/RESULTS.md"],
                           cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()
    lines.append(f"- code: commit {commit or 'unknown'}{' with uncommitted changes' if dirty else ''}")
    return lines


SECTION_TITLES = {"sqlite": "## SQLite", "postgresql": "## PostgreSQL"}
RESULTS_INTRO = """# Benchmark results

Written by `python -m benchmarks` (see README.md): each run replaces the rows it measured in the
section of its database and keeps the rest. Every figure is the median of the runs, with the
minimum and maximum in brackets; each baseline was measured in the same run, on the same data and
database. A ratio of 1.00 is the baseline's speed (ours ÷ baseline for rates, baseline ÷ ours for
times).
"""


def write_results(path: Path, database: str, command: str, started: str, rows: list[Row],
                  header: list[str], postgres_version: str | None) -> None:
    """Update `database`'s section of RESULTS.md: the rows measured replace those of the same
    workload (the others stay, with the runs that measured them listed), and the machine is the
    latest run's. The other database's section stays as it was."""
    sections = {name: "" for name in SECTION_TITLES}
    if path.exists():
        text = path.read_text(encoding="utf-8")
        for name, title in SECTION_TITLES.items():
            start = text.find(title + "\n")
            if start >= 0:
                ends = [text.find(other + "\n", start + 1) for other in SECTION_TITLES.values()]
                end = min([e for e in ends if e > start] or [len(text)])
                sections[name] = text[start:end]
    old = sections[database].splitlines()
    runs = [line for line in old if line.startswith("- run: ")]
    kept = {line.split("|")[1].strip(): line for line in old
            if line.startswith("| ") and not line.startswith(("| workload", "| ---"))}
    for row in rows:
        kept[row.workload] = row.line()
    runs.append(f"- run: `{command}`, started {started}: "
                f"{', '.join(row.workload for row in rows) or 'nothing'}")
    machine_lines = [*header] + ([f"- PostgreSQL: {postgres_version}"] if postgres_version else [])
    sections[database] = "\n".join([SECTION_TITLES[database], "", *runs, "", "Latest run on:", "",
                                     *machine_lines, "", TABLE_HEADER, *kept.values(), ""])
    body = "\n".join(section.rstrip() + "\n" for section in sections.values() if section)
    path.write_text(RESULTS_INTRO + "\n" + body, encoding="utf-8")
