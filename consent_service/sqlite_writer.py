"""One writer at a time on a SQLite database file, handed over at once instead of by polling.

SQLite lets one connection write at a time. A connection that finds the file locked waits in
SQLite's busy handler, which sleeps 1, 2, 5, 10, … up to 100 ms between tries, so a writer
released after 3 ms may not try again for 50: with two gunicorn workers writing one-clicks, half
the requests waited there (p50 240 ms, 62 a second). Here every connection of the service takes
the database's write turn before its first write of a transaction: a lock of the process (for
its threads) and an exclusive `flock` on `DATABASE-writer` beside the file (for the other
processes), tried every half millisecond. SQLite's own lock is then free when the connection
asks for it; the busy handler only still waits for writers that are not the service (the
`sqlite3` shell, a backup), as before. A connection that cannot have the turn within its busy
timeout (`timeout`, 5 s unless set in the engine's `connect_args`) fails as SQLite would, with
"database is locked", which the pages answer with a 503.

The turn is held from the statement that starts writing (INSERT, UPDATE, DELETE, REPLACE, DDL,
`BEGIN IMMEDIATE`) until the transaction ends (commit, rollback, close). Python's `sqlite3` reads
outside a transaction until the first write, so a use case that reads what it will decide on and
then writes starts with `BEGIN IMMEDIATE` (`services.write_turn.begin_writing`): its reads then
see the last committed state and nobody can change it before it commits.
"""

from __future__ import annotations

import fcntl
import functools
import os
import sqlite3
import threading
import time
from typing import Any

# statements that take SQLite's write lock, by their first word (after `lstrip`, upper case)
_WRITING = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")
_BEGIN_WRITING = ("BEGIN IMMEDIATE", "BEGIN EXCLUSIVE")
POLL_SECONDS = 0.0005
DEFAULT_TIMEOUT = 5.0  # sqlite3.connect's own default


def starts_writing(statement: str) -> bool:
    """Whether `statement` takes SQLite's write lock (or may: a DDL statement)."""
    head = statement.lstrip()[:15].upper()
    return head.startswith(_WRITING) or head.startswith(_BEGIN_WRITING)


class WriterTurn:
    """The write turn of one database file in this process: a thread lock, then the file lock.

    The lock file is opened once per process (a descriptor inherited across `fork` would be
    the same lock in both processes, so a child opens its own)."""

    def __init__(self, path: str) -> None:
        self.path = path + "-writer"
        self._threads = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    def acquire(self, timeout: float) -> None:
        """Wait for the turn, at most `timeout` seconds.

        :raise sqlite3.OperationalError: "database is locked", as SQLite says it.
        """
        deadline = time.monotonic() + timeout
        if not self._threads.acquire(timeout=max(timeout, 0)):
            raise sqlite3.OperationalError("database is locked")
        try:
            fd = self._descriptor()
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise sqlite3.OperationalError("database is locked") from None
                    time.sleep(POLL_SECONDS)
        except BaseException:
            self._threads.release()
            raise

    def release(self) -> None:
        try:
            if self._fd is not None and self._pid == os.getpid():
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = os.getpid()
        return self._fd


_turns: dict[str, WriterTurn] = {}
_turns_lock = threading.Lock()


def writer_turn(database: str) -> WriterTurn:
    """The process's write turn for this database file (one per file, whatever the engines)."""
    path = os.path.realpath(database)
    with _turns_lock:
        turn = _turns.get(path)
        if turn is None or turn._pid not in (0, os.getpid()):
            turn = _turns[path] = WriterTurn(path)
        return turn


@functools.cache
def connection_class(turn: WriterTurn, timeout: float) -> type[sqlite3.Connection]:
    """A `sqlite3.Connection` (the `factory` of `sqlite3.connect`) that takes `turn` before its
    first write of a transaction and gives it back when the transaction ends (made once per turn
    and timeout)."""

    class TurnTakingCursor(sqlite3.Cursor):
        connection: TurnTakingConnection

        def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
            return self._in_turn(super().execute, sql, parameters)

        def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
            return self._in_turn(super().executemany, sql, parameters)

        def _in_turn(self, run: Any, sql: str, parameters: Any) -> sqlite3.Cursor:
            connection = self.connection
            if not connection.holds_turn and starts_writing(sql):
                connection.take_turn()
            try:
                return run(sql, parameters)
            finally:
                connection.end_turn_if_done()

    class TurnTakingConnection(sqlite3.Connection):
        holds_turn = False

        def cursor(self, factory: Any = TurnTakingCursor) -> Any:  # type: ignore[override]
            return super().cursor(factory)

        def take_turn(self) -> None:
            turn.acquire(timeout)
            self.holds_turn = True

        def end_turn_if_done(self) -> None:
            if self.holds_turn and not self.in_transaction:
                self.holds_turn = False
                turn.release()

        def commit(self) -> None:
            try:
                super().commit()
            finally:
                self.end_turn_if_done()

        def rollback(self) -> None:
            try:
                super().rollback()
            finally:
                self.end_turn_if_done()

        def close(self) -> None:
            try:
                super().close()
            finally:
                if self.holds_turn:
                    self.holds_turn = False
                    turn.release()

    return TurnTakingConnection
