"""The workloads of issue 14, each against its raw baseline in the same run, on the same data and
database: import, export, webhook, one-click, eligibility API."""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks import http_load
from benchmarks.harness import (
    BenchmarkError,
    Figure,
    Row,
    app_environment,
    print_row,
    run_child,
    run_flask,
)
from benchmarks.library import SEED, TOPICS, patrons

WORKLOADS = ("import", "export", "webhook", "oneclick", "eligibility")

# ours ÷ baseline, by workload and database (issue 14); memory limits in MiB, p99 limits in ms
TARGETS = {
    "import new": {"sqlite": 0.30, "postgresql": 0.30},
    "import again": {"sqlite": 0.50, "postgresql": 0.50},
    "export": {"sqlite": 0.50, "postgresql": 0.50},
    "webhook": {"sqlite": 0.50, "postgresql": 0.40},
    "oneclick": {"sqlite": 0.40, "postgresql": 0.35},
    "eligibility": {"sqlite": 0.50, "postgresql": 0.45},
}
P99_LIMIT_MS = {"sqlite": 50.0, "postgresql": 60.0}


@dataclass
class Settings:
    patrons: int
    repeat: int
    database_url: str  # "" = SQLite files in the work directory
    workdir: Path
    duration: float
    clients: int
    batches: int
    events: int
    links: int = 2000

    @property
    def kind(self) -> str:
        return "postgresql" if self.database_url.startswith("postgresql") else "sqlite"

    def url(self, name: str) -> str:
        return self.database_url or f"sqlite:///{self.workdir / (name + '.sqlite3')}"


def run_import(settings: Settings) -> list[Row]:
    """`patrons import` of N rows into an empty database, then the same file again, against the
    same rows inserted, then upserted, by the driver alone (baseline)."""
    n = settings.patrons
    csv_path = settings.workdir / f"patrons-{n}.csv"
    stats = run_child("write-csv", {"path": str(csv_path), "patrons": n}, settings.workdir, {})
    print(f"import: wrote {csv_path.name} ({csv_path.stat().st_size / 2**20:.0f} MiB): "
          f"{stats.report}", flush=True)
    url = settings.url("import")
    env = app_environment(url)
    figures = {name: Figure("s") for name in ("new", "again", "base new", "base again")}
    memory = {name: Figure("MiB") for name in ("new", "again")}
    for attempt in range(1, settings.repeat + 1):
        run_child("schema", {"url": url}, settings.workdir, env)
        for name in ("new", "again"):
            run = run_flask(["patrons", "import", str(csv_path)], f"import-{name}",
                            settings.workdir, env)
            expected = f"created {n}," if name == "new" else f"unchanged {n},"
            if expected not in run.report["summary"]:
                raise BenchmarkError(f"import {name}: {run.report['summary']!r}, expected {expected}")
            figures[name].values.append(run.wall)
            memory[name].values.append(run.peak_rss_mib)
            print(f"  import {name:<5} run {attempt}: {run.wall:7.1f} s, peak RSS "
                  f"{run.peak_rss_mib:6.1f} MiB: {run.report['summary']}", flush=True)
        run_child("schema", {"url": url}, settings.workdir, env)
        for name in ("base new", "base again"):
            run = run_child("import-baseline", {"url": url, "path": str(csv_path)}, settings.workdir,
                            env)
            figures[name].values.append(run.wall)
            print(f"  import {name:<10} run {attempt}: {run.wall:7.1f} s, peak RSS "
                  f"{run.peak_rss_mib:6.1f} MiB", flush=True)
    rows = [
        Row(f"import, {n:,} new", settings.kind, figures["new"], figures["base new"], False,
            TARGETS["import new"][settings.kind], memory["new"], 300.0),
        Row(f"import, same {n:,} again", settings.kind, figures["again"], figures["base again"],
            False, TARGETS["import again"][settings.kind], memory["again"]),
    ]
    for row in rows:
        print_row(row)
    return rows


def build_library(settings: Settings) -> str:
    url = settings.url("library")
    run = run_child("build-library", {"url": url, "patrons": settings.patrons}, settings.workdir,
                    app_environment(url))
    print(f"library: {settings.patrons:,} patrons loaded in {run.wall:.1f} s: {run.report}",
          flush=True)
    return url


def run_export(settings: Settings, url: str) -> list[Row]:
    """`export contacts` for one email topic (with the excluded file), against a plain SELECT of
    the same columns streamed to csv.writer."""
    env = app_environment(url)
    ours, base, memory = Figure("s"), Figure("s"), Figure("MiB")
    output = settings.workdir / "contacts.csv"
    for attempt in range(1, settings.repeat + 1):
        run = run_flask(["export", "contacts", "--purpose", "email_marketing", "--topic", "events",
                         "--output", str(output), "--excluded",
                         str(settings.workdir / "excluded.csv")], "export", settings.workdir, env)
        if not run.report["summary"].startswith("exported "):
            raise BenchmarkError(f"export: {run.report['summary']!r}")
        ours.values.append(run.wall)
        memory.values.append(run.peak_rss_mib)
        print(f"  export   run {attempt}: {run.wall:7.1f} s, peak RSS {run.peak_rss_mib:6.1f} MiB: "
              f"{run.report['summary'][:90]}", flush=True)
        run = run_child("export-baseline", {"url": url, "output": str(output)}, settings.workdir,
                        env)
        base.values.append(run.wall)
        print(f"  baseline run {attempt}: {run.wall:7.1f} s, peak RSS {run.peak_rss_mib:6.1f} MiB, "
              f"{run.report['rows']:,} rows", flush=True)
    row = Row(f"export, {settings.patrons:,} patrons", settings.kind, ours, base, False,
              TARGETS["export"][settings.kind], memory, 200.0)
    print_row(row)
    return [row]


def run_http(settings: Settings, url: str, workloads: list[str]) -> list[Row]:
    """The workloads served by gunicorn (2 workers): the webhook, one-click, the eligibility API."""
    signer = http_load.Signer()
    env = app_environment(url, CONSENT_SENDGRID_WEBHOOK_PUBLIC_KEY=signer.public_key_base64)
    plan = settings.workdir / "http.json"
    run_child("prepare-http", {"url": url, "links": settings.links, "out": str(plan)},
              settings.workdir, env)
    prepared = json.loads(plan.read_text())
    rows: list[Row] = []
    with http_load.gunicorn(env, settings.workdir) as port:
        if "webhook" in workloads:
            rows.append(_webhook(settings, url, env, port, signer))
        if "oneclick" in workloads:
            paths = prepared["unsubscribe_paths"]
            form = {"Content-Type": "application/x-www-form-urlencoded"}
            body = b"List-Unsubscribe=One-Click"
            rows.append(_load_row(
                settings, f"one-click, {settings.patrons:,} patrons", "oneclick", port,
                lambda i: ("POST", paths[i % len(paths)], body, form),
                lambda i: ("POST", "/bench/hello", body, form)))
        if "eligibility" in workloads:
            cards = prepared["cards"]
            auth = {"Authorization": f"Bearer {prepared['api_key']}"}
            rows.append(_load_row(
                settings, f"eligibility API, {settings.patrons:,} patrons", "eligibility", port,
                lambda i: ("GET", f"/api/v1/eligibility?card_number={cards[i % len(cards)]}"
                                  "&purpose=email_marketing&topic=events", None, auth),
                lambda i: ("GET", "/bench/hello", None, auth)))
    run_child("drop-bench-tables", {"url": url}, settings.workdir, env)
    return rows


def _load_row(settings: Settings, label: str, workload: str, port: int,
              ours: Callable[[int], http_load.Request],
              baseline: Callable[[int], http_load.Request]) -> Row:
    throughput = {"ours": Figure("req/s"), "base": Figure("req/s")}
    latency = {"p50": Figure("ms"), "p99": Figure("ms")}
    base_p99 = Figure("ms")
    errors = 0
    for attempt in range(1, settings.repeat + 1):
        order = [("ours", ours), ("base", baseline)]
        if attempt % 2 == 0:
            order.reverse()  # neither always runs on a warmer (or busier) server
        for name, make in order:
            result = http_load.load(port, make, clients=settings.clients, duration=settings.duration)
            throughput[name].values.append(result.throughput)
            if name == "ours":
                latency["p50"].values.append(result.p50_ms)
                latency["p99"].values.append(result.p99_ms)
                errors += result.errors
            else:
                base_p99.values.append(result.p99_ms)
                if result.errors:
                    raise BenchmarkError(f"baseline errors: {result.first_error}")
            print(f"  {workload} {name} run {attempt}: {result.throughput:,.0f} req/s, p50 "
                  f"{result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, {result.requests:,} "
                  f"requests, {result.errors} errors"
                  + (f" (first: {result.first_error})" if result.first_error else ""), flush=True)
    row = Row(label, settings.kind, throughput["ours"], throughput["base"], True,
              TARGETS[workload][settings.kind], latency=latency,
              latency_limit_ms=P99_LIMIT_MS[settings.kind] if workload == "oneclick" else None,
              notes=[f"{errors} errors", f"baseline p99 {base_p99.text()}",
                     f"{settings.clients} clients × {settings.duration:g} s"])
    if errors:
        row.target = float("inf")  # errors fail the row whatever the speed
    print_row(row)
    return row


def _webhook(settings: Settings, url: str, env: dict[str, str], port: int,
             signer: http_load.Signer) -> Row:
    known = [(p.public_id, p.email) for p in itertools.islice(patrons(settings.patrons), 50_000)
             if p.email]
    ours, base = Figure("events/s"), Figure("events/s")
    total = settings.batches * settings.events
    for attempt in range(1, settings.repeat + 1):
        bodies = http_load.sendgrid_batches(
            random.Random(SEED + attempt), batches=settings.batches, events=settings.events,
            actionable=0.10, duplicates=0.01, patrons=known, groups=list(TOPICS.values()),
            run=attempt)
        order = [("ours", "/webhooks/sendgrid", ours), ("base", "/bench/webhook", base)]
        if attempt % 2 == 0:
            order.reverse()
        for name, path, figure in order:
            started = time.perf_counter()
            for body in bodies:
                status, answer = http_load.request_once(
                    port, ("POST", path, body, signer.headers(body)))
                if status != 200:
                    raise BenchmarkError(f"{path}: HTTP {status}: {answer[:200]!r}")
            figure.values.append(total / (time.perf_counter() - started))
            print(f"  webhook {name} run {attempt}: {figure.values[-1]:,.0f} events/s", flush=True)
        waiting = run_child("count", {"url": url, "table": "webhook_batches",
                                      "where": "WHERE status <> 'processed'"}, settings.workdir, env)
        if waiting.report["count"]:
            raise BenchmarkError(f"{waiting.report['count']} webhook batch(es) not processed")
    row = Row(f"webhook, {total:,} events", settings.kind, ours, base, True,
              TARGETS["webhook"][settings.kind],
              notes=[f"{settings.batches} batches × {settings.events}, 10% actionable, "
                     "1% duplicates"])
    print_row(row)
    return row


def postgres_version(url: str, workdir: Path) -> str | None:
    """The server's version string, for RESULTS.md (None on SQLite)."""
    if not url.startswith("postgresql"):
        return None
    return str(run_child("pg-version", {"url": url}, workdir, {}).report["version"])


def run(settings: Settings, workloads: list[str]) -> list[Row]:
    rows: list[Row] = []
    if "import" in workloads:
        rows += run_import(settings)
    rest = [w for w in workloads if w != "import"]
    if rest:
        url = build_library(settings)
        if "export" in rest:
            rows += run_export(settings, url)
        served = [w for w in rest if w != "export"]
        if served:
            rows += run_http(settings, url, served)
    return rows

