"""Rate limits counted in the service's database: shared by every worker process, atomic, and tidy."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from limits.storage import storage_from_string
from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service.models import RateLimitCounter, Topic
from consent_service.ratelimit import DatabaseStorage
from tests.conftest import NOW, POSTGRES_URL

REPOSITORY = Path(__file__).resolve().parents[2]
HASH_KEY = "a-real-address-hash-key-of-forty-characters"
HOUR = 3600

# One gunicorn worker: its own process, its own app (create_app), the same database; it asks for a
# link for ADDRESS as a browser does, once per line of output, from a new client address each time.
WORKER = """
import sys
from consent_service import create_app
from tests.integration.public_pages import csrf_token

app = create_app()
site = "https://consent.library.example"
for n in range(int(sys.argv[1])):
    client = app.test_client()
    token = csrf_token(client.get("/preferences", base_url=site).text)
    answer = client.post("/preferences", base_url=site, buffered=True,
                         data={"csrf_token": token, "email": sys.argv[2]},
                         environ_base={"REMOTE_ADDR": f"192.0.2.{sys.argv[3]}{n}"})
    answer.close()
    print(answer.status_code)
"""


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """A database that separate processes can open: a file on SQLite, the test database otherwise."""
    return POSTGRES_URL or f"sqlite:///{tmp_path / 'consent.sqlite3'}"


@pytest.fixture
def clock() -> list[datetime]:
    return [NOW]


@pytest.fixture
def app(app_factory: Callable[..., Flask], database_url: str, clock: list[datetime]) -> Flask:
    return app_factory(SQLALCHEMY_DATABASE_URI=database_url, ADDRESS_HASH_KEY=HASH_KEY,
                       RATELIMIT_STORAGE_URI="database://", CLOCK=lambda: clock[0])


@pytest.fixture
def storage(session: Session) -> DatabaseStorage:
    found = storage_from_string("database://")
    assert isinstance(found, DatabaseStorage)
    return found


def run_worker(requests: int, email: str, number: int, database_url: str,
               mail_dir: Path) -> list[int]:
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith("CONSENT_")}
    environment.update({
        "CONSENT_ENV": "production",
        "CONSENT_DATABASE_URL": database_url,
        "CONSENT_SECRET_KEY": "a-real-secret-key-of-forty-random-characters",
        "CONSENT_ADDRESS_HASH_KEY": HASH_KEY,
        "CONSENT_PUBLIC_BASE_URL": "https://consent.library.example",
        "CONSENT_MAIL_BACKEND": "file",
        "CONSENT_MAIL_FILE_DIR": str(mail_dir),
    })
    done = subprocess.run([sys.executable, "-c", WORKER, str(requests), email, str(number)],
                          cwd=REPOSITORY, env=environment, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return [int(line) for line in done.stdout.split()]


def test_two_worker_processes_share_the_per_address_limit_of_three_links_an_hour(
        app, make_patron, database_url, tmp_path):
    make_patron(email="reader@example.org")
    mail_dir = tmp_path / "mail"

    first_worker = run_worker(2, "reader@example.org", 1, database_url, mail_dir)
    second_worker = run_worker(2, "Reader@Example.org", 2, database_url, mail_dir)

    assert (first_worker, second_worker) == ([200, 200], [200, 429])
    assert len(list(mail_dir.glob("*.eml"))) == 3


def test_a_hit_is_counted_without_committing_or_rolling_back_the_requests_session(
        storage, session):
    session.add(Topic(key="storytime", name="Storytime"))

    assert storage.incr("address:abc", HOUR) == 1
    session.rollback()

    assert session.scalar(select(Topic).where(Topic.key == "storytime")) is None
    assert storage.get("address:abc") == 1


def test_hits_count_up_within_the_window_and_start_again_after_it(storage, clock):
    assert [storage.incr("client:198.51.100.7", HOUR) for _ in range(3)] == [1, 2, 3]
    assert storage.get("client:198.51.100.7") == 3
    assert storage.get_expiry("client:198.51.100.7") == (NOW + timedelta(hours=1)).timestamp()

    clock[0] = NOW + timedelta(hours=1)

    assert storage.get("client:198.51.100.7") == 0
    assert storage.incr("client:198.51.100.7", HOUR) == 1
    assert storage.get_expiry("client:198.51.100.7") == (NOW + timedelta(hours=2)).timestamp()


def test_counters_whose_window_has_passed_are_deleted_when_a_new_window_opens(
        storage, session, clock):
    storage.incr("address:old", HOUR)
    storage.incr("address:current", 3 * HOUR)
    clock[0] = NOW + timedelta(hours=2)

    storage.incr("address:new", HOUR)

    session.expire_all()
    assert sorted(session.scalars(select(RateLimitCounter.key))) == ["address:current",
                                                                     "address:new"]


def test_simultaneous_hits_each_get_their_own_count(app, storage):
    def hit(_: int) -> int:
        with app.app_context():
            return storage.incr("address:busy", HOUR)

    with ThreadPoolExecutor(max_workers=8) as pool:
        counts = list(pool.map(hit, range(24)))

    assert sorted(counts) == list(range(1, 25))


def test_clearing_forgets_one_counter_and_resetting_forgets_all(storage):
    storage.incr("address:one", HOUR)
    storage.incr("address:two", HOUR)

    storage.clear("address:one")
    assert (storage.get("address:one"), storage.get("address:two")) == (0, 1)
    assert storage.reset() == 1
    assert storage.get("address:two") == 0
    assert storage.check() is True
