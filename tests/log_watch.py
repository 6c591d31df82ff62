"""The log watch: every log record of the whole test run is kept (tests/conftest.py installs it on
the root logger for the session) and scanned at the end for what logs must never carry: a signed
link issued during the run, an API key, an email address, or a name of a patron the run created.
STYLE.md: logs carry ids, not addresses; a link token in a log is a key to a patron's choices.

The development server's request lines (logger `werkzeug`, used only by the browser tests' live
site and `scripts/start`) print the request path, which holds the link: they are kept apart and
not scanned, and README says so (production serves with gunicorn, whose access log is off)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
API_KEY = re.compile(r"csk_[A-Za-z0-9_-]{16,}")
# an itsdangerous URL-safe timed token: payload.timestamp.signature
LINK_TOKEN = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{4,8}\.[A-Za-z0-9_-]{20,}")
# the Message-ID the outbox gives a message (`<outbox-7.1780315200@example.org>`): not an address
MESSAGE_ID = re.compile(r"<outbox-[0-9]+\.[0-9]+@[^<>\s]+>")
NOT_SCANNED = ("werkzeug",)
MIN_NAME = 4  # shorter names ("Ana", "Li") match too many ordinary words to be told apart


@dataclass(frozen=True)
class Leak:
    test: str
    logger: str
    what: str
    line: str

    def __str__(self) -> str:
        return f"{self.test}: logger {self.logger} logged {self.what}: {self.line[:300]}"


@dataclass
class LogWatch(logging.Handler):
    """A handler that keeps every record with the test that logged it, and what to look for."""

    current: str = "(collection)"
    lines: list[tuple[str, str, str]] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)
    records: int = 0

    def __post_init__(self) -> None:
        logging.Handler.__init__(self, logging.DEBUG)

    def __hash__(self) -> int:  # a handler is kept in the logging module's sets
        return id(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        if record.name.split(".")[0] in NOT_SCANNED:
            return
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append((self.current, record.name, text))

    @contextmanager
    def deliberate(self) -> Iterator[list[tuple[str, str, str]]]:
        """Records logged inside are a test's own bait: handed to it, and not kept for the scan."""
        start = len(self.lines)
        bait: list[tuple[str, str, str]] = []
        try:
            yield bait
        finally:
            bait.extend(self.lines[start:])
            del self.lines[start:]

    def leaks(self, lines: Iterable[tuple[str, str, str]] | None = None) -> list[Leak]:
        found = []
        names = [re.compile(rf"\b{re.escape(name)}\b") for name in sorted(self.names)
                 if len(name) >= MIN_NAME]
        for test, logger, text in self.lines if lines is None else lines:
            what = None
            if any(token in text for token in self.tokens) or LINK_TOKEN.search(text):
                what = "a signed link"
            elif API_KEY.search(text):
                what = "an API key"
            elif EMAIL.search(MESSAGE_ID.sub("<message-id>", text)):
                what = "an email address"
            else:
                name = next((pattern for pattern in names if pattern.search(text)), None)
                if name is not None:
                    what = f"a patron's name ({name.pattern[2:-2]})"
            if what:
                found.append(Leak(test, logger, what, text))
        return found


WATCH = LogWatch()
