"""The HTTP side: gunicorn started and stopped, a small load client (threads and http.client), and
signed SendGrid batches.

The client opens a connection per request (gunicorn's sync workers close each one), measures each
request from connect to the last byte of the answer, and counts any answer but the expected status
as an error.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT, BenchmarkError

Request = tuple[str, str, bytes | None, dict[str, str]]  # method, path, body, headers


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    first_error: str | None

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def gunicorn(env: dict[str, str], workdir: Path, workers: int = 2) -> Iterator[int]:
    """gunicorn with `workers` sync workers serving benchmarks.server:app; yields its port."""
    with gunicorn_process(env, workdir, workers) as (port, _process):
        yield port


@contextmanager
def gunicorn_process(env: dict[str, str], workdir: Path, workers: int = 2
                     ) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """As `gunicorn`, yielding the master process too (its children are the workers); its log is
    `workdir/gunicorn.log`."""
    port = free_port()
    log = (workdir / "gunicorn.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--bind",
         f"127.0.0.1:{port}", "--backlog", "2048", "--timeout", "300", "benchmarks.server:app"],
        cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise BenchmarkError("gunicorn stopped:\n" + (workdir / "gunicorn.log").read_text()[-3000:])
            try:
                status, _ = request_once(port, ("GET", "/healthz", None, {}))
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchmarkError("gunicorn did not answer /healthz within 60 s")
            time.sleep(0.2)
        yield port, process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def request_once(port: int, request: Request, timeout: float = 120) -> tuple[int, bytes]:
    method, path, body, headers = request
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def load(port: int, make_request: Callable[[int], Request], *, clients: int, duration: float,
         expected: int = 200) -> LoadResult:
    """`clients` threads sending requests back to back for `duration` seconds (request i of the
    whole run is `make_request(i)`)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    first_error: list[str] = []
    counter = iter(range(10**12))
    lock = threading.Lock()
    deadline = time.perf_counter() + duration

    def client(slot: int) -> None:
        while time.perf_counter() < deadline:
            with lock:
                number = next(counter)
            started = time.perf_counter()
            try:
                status, body = request_once(port, make_request(number), timeout=30)
            except OSError as error:
                status, body = 0, str(error).encode()
            latencies[slot].append(time.perf_counter() - started)
            if status != expected:
                errors[slot] += 1
                if not first_error:
                    first_error.append(f"HTTP {status}: {body[:200]!r}")

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(slot,)) for slot in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    every = sorted(x for slot in latencies for x in slot)
    if not every:
        raise BenchmarkError("no request finished")
    cuts = statistics.quantiles(every, n=100) if len(every) > 1 else [every[0]] * 99
    return LoadResult(len(every), sum(errors), seconds, cuts[49] * 1000, cuts[98] * 1000,
                      first_error[0] if first_error else None)


# --- SendGrid batches ---------------------------------------------------------------------------

SKIPPED_KINDS = ("processed", "delivered", "open", "open", "click", "deferred")
ACTION_KINDS = ("unsubscribe", "group_unsubscribe", "group_unsubscribe", "group_resubscribe",
                "spamreport", "bounce")


class Signer:
    """Signs batches as SendGrid does: ECDSA P-256 / SHA-256 over timestamp + raw body."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        self._key = ec.generate_private_key(ec.SECP256R1())
        der = self._key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        self.public_key_base64 = base64.b64encode(der).decode("ascii")

    def headers(self, body: bytes) -> dict[str, str]:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        timestamp = str(int(time.time()))
        signature = self._key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
                "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
                "Content-Type": "application/json"}


def sendgrid_batches(rng: random.Random, *, batches: int, events: int, actionable: float,
                     duplicates: float, patrons: list[tuple[str, str]], groups: list[int],
                     run: int) -> list[bytes]:
    """Batch bodies as SendGrid sends them (compact JSON): `actionable` of the events act on the
    ledger (unsubscribes, group unsubscribes and resubscribes, spam reports, hard bounces), the rest
    are opens, clicks, deliveries; `duplicates` repeat an earlier event of the run (same
    sg_event_id: SendGrid's retries); times are spread over the last day in no order, so a
    resubscribe may arrive before the older unsubscribe it follows. Half name the patron at the
    address with the `patron_id` custom arg; the other half come for addresses we do not know."""
    now = datetime.now(UTC)
    sent: list[dict[str, Any]] = []
    bodies = []
    sequence = 0
    for _ in range(batches):
        batch: list[dict[str, Any]] = []
        for _ in range(events):
            if sent and rng.random() < duplicates:
                batch.append(rng.choice(sent))
                continue
            sequence += 1
            if rng.random() < 0.5:
                public_id, email = patrons[rng.randrange(len(patrons))]
                extra: dict[str, Any] = {"patron_id": public_id}
            else:
                email, extra = f"reader{rng.randrange(200_000)}@example.net", {}
            when = now - timedelta(seconds=rng.randrange(60, 24 * 3600))
            kind = rng.choice(ACTION_KINDS if rng.random() < actionable else SKIPPED_KINDS)
            event = {"email": email, "timestamp": int(when.timestamp()), "event": kind,
                     "sg_event_id": f"r{run}ev{sequence:09d}",
                     "sg_message_id": f"r{run}msg{sequence // 3:08d}.filter0001",
                     "smtp-id": f"<{sequence}@ismtpd-555>", "category": ["library"], **extra}
            if kind.startswith("group_"):
                event["asm_group_id"] = rng.choice(groups)
            if kind == "bounce":
                event.update(type="bounce", reason="550 5.1.1 unknown user", status="5.1.1")
            if kind in ("open", "click"):
                event.update(useragent="Mozilla/5.0", ip="192.0.2.1")
            batch.append(event)
            if len(sent) < 5000:
                sent.append(event)
        bodies.append(json.dumps(batch, separators=(",", ":")).encode("utf-8"))
    return bodies
