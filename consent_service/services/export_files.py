"""The files exports write: spreadsheet-safe CSV cells, a SHA-256 of every byte written, and
files that appear only when complete."""

from __future__ import annotations

import csv
import hashlib
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Protocol

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: str | None) -> str:
    """A text value a spreadsheet shows as text, in one cell: one that would start a formula gets a
    leading '; a carriage return becomes a line feed. Python's csv writer quotes a cell holding a
    character of its line terminator (ours is "\n") but not a lone "\r", which spreadsheets read
    as the end of a row: `Main St\r=1+1` would start a new row with a formula."""
    if not value:
        return ""
    if "\r" in value:
        value = value.replace("\r\n", "\n").replace("\r", "\n")
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


class SpreadsheetSafeWriter:
    """A CSV writer whose every cell goes through `spreadsheet_safe` (None is written empty)."""

    def __init__(self, sink: DigestingSink) -> None:
        self._sink = sink
        self._writer = csv.writer(sink, lineterminator="\n")

    def writerow(self, cells: Sequence[str | None]) -> None:
        self._writer.writerow([spreadsheet_safe(cell) for cell in cells])

    def write_safe_rows(self, rows: Iterable[Sequence[str]]) -> None:
        """Write rows whose cells the caller made safe already (each through `spreadsheet_safe`,
        or known to start with a safe text and hold no carriage return), in one call."""
        self._writer.writerows(rows)

    def flush(self) -> None:
        """Pass the rows written so far on to the sink's stream."""
        self._sink.flush()


class _ByteStream(Protocol):
    def write(self, data: bytes, /) -> int: ...


class DigestingSink:
    """What `csv.writer` writes to: encodes UTF-8 and keeps the SHA-256 of every byte written.

    Rows are held until `flush` (an export flushes after each chunk of patrons), so the digest,
    the encoding and the stream see one write per chunk instead of one per row."""

    def __init__(self, stream: _ByteStream) -> None:
        self._stream = stream
        self._digest = hashlib.sha256()
        self._held: list[str] = []

    def write(self, text: str) -> int:
        self._held.append(text)
        return len(text)

    def flush(self) -> None:
        """Encode, digest and write what is held."""
        if self._held:
            data = "".join(self._held).encode("utf-8")
            self._held.clear()
            self._digest.update(data)
            self._stream.write(data)

    def hexdigest(self) -> str:
        """The SHA-256 of every byte written (what is held is written first)."""
        self.flush()
        return self._digest.hexdigest()


class Buffer:
    """Bytes written and not yet handed out: what a download's next chunk is."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(data)
        return len(data)

    def pending(self) -> bool:
        return bool(self._parts)

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


@contextmanager
def replaced_when_complete(target: Path) -> Iterator[IO[bytes]]:
    """A temporary file beside `target`, moved onto it when the block completes and removed if it
    fails. A target that exists and is not a regular file (`/dev/null`, a named pipe, a terminal)
    is written in place: moving a file onto it would replace the device itself (as root, `/dev/null`
    would become a plain file for every program on the machine)."""
    if target.exists() and not target.is_file():
        with target.open("wb") as stream:
            yield stream
        return
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, before the move
        dir=target.parent, prefix=f".{target.name}.", suffix=".partial", delete=False)
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, target)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


@contextmanager
def standard_output() -> Iterator[IO[bytes]]:
    """Standard output as bytes, so the digest is of exactly what was written."""
    sys.stdout.flush()
    stream = sys.stdout.buffer
    yield stream
    stream.flush()
