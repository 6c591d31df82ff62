"""Reading the CSV files that imports take (UTF-8, header checked), and reporting what they did."""

from __future__ import annotations

import csv
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from consent_service.domain import ConsentServiceError


class ImportFileError(ConsentServiceError):
    """A file that cannot be imported at all: not UTF-8, empty, or missing a required column."""


@dataclass(frozen=True)
class RowProblem:
    """Why a data row was rejected; `line` is the file's physical line (the header is line 1)."""

    line: int
    message: str


@dataclass
class ImportReport:
    """What an import did: how many rows ended which way, and each rejected row with its reasons."""

    problems: list[RowProblem] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return len(self.problems)

    def reject(self, line: int, reasons: Sequence[str]) -> None:
        """Reject a row for all its reasons: one problem per row, the reasons joined by `; `."""
        self.problems.append(RowProblem(line, "; ".join(reason.rstrip(".") for reason in reasons)))

    def counts(self) -> list[tuple[str, int]]:
        """The outcomes shown before `rejected`, in order; each import names its own."""
        return []

    def summary(self) -> str:
        """One line, e.g. `created 3, updated 1, unchanged 2, rejected 0`."""
        shown = [*self.counts(), ("rejected", self.rejected)]
        return ", ".join(f"{label} {n}" for label, n in shown)


@dataclass(frozen=True)
class CsvRow:
    """A data row: the physical line it starts on, the values of the header's known columns
    (trimmed), and what is wrong with its shape when it has more or fewer fields than the header."""

    line: int
    values: dict[str, str]
    shape_problem: str | None = None


def read_csv(path: Path, *, required: Collection[str], known: Collection[str]) -> list[CsvRow]:
    """The data rows of a whole CSV file (blank lines left out), checked before any row is used.

    The file is UTF-8, with or without a byte-order mark. Header names are trimmed and matched
    case-insensitively; columns not in `known` are ignored, and a column absent from the header is
    absent from every row's `values`. A missing `required` column, a column named twice, bytes that
    are not UTF-8, a quote left open, or an empty file raise ImportFileError naming the line. A row
    with more or fewer fields than the header keeps a `shape_problem`, for the import to reject with
    its line number (a short row must not blank the columns it lacks).
    """
    with path.open("rb") as handle:
        records = _Records(handle, path.name)
        header: list[str] | None = []
        while header is not None and not any(cell.strip() for cell in header):
            header = records.next()
        if header is None:
            raise ImportFileError(
                f"{path.name}: the file is empty; its first line must be the header")
        names = [cell.strip().lower() for cell in header]
        _check_header(names, path.name, records.start, required)
        rows: list[CsvRow] = []
        while (record := records.next()) is not None:
            if not any(cell.strip() for cell in record):
                continue
            values = {name: value.strip() for name, value in zip(names, record, strict=False)
                      if name in known}
            shape = None
            if len(record) != len(names):
                shape = f"the row has {len(record)} fields but the header has {len(names)}"
            rows.append(CsvRow(records.start, values, shape))
    return rows


class _Records:
    """The records of a CSV file, each with the physical line it starts on (`start`)."""

    def __init__(self, handle: BinaryIO, file_name: str) -> None:
        self._file_name = file_name
        self._reader = csv.reader(_utf8_lines(handle, file_name), strict=True)
        self.start = 0

    def next(self) -> list[str] | None:
        """The next record (an empty list for a blank line), or None at the end of the file."""
        self.start = self._reader.line_num + 1
        try:
            return next(self._reader)
        except StopIteration:
            return None
        except csv.Error as exc:
            raise ImportFileError(
                f"{self._file_name}: line {self.start} is not valid CSV: {exc}") from None


def _utf8_lines(handle: BinaryIO, file_name: str) -> Iterator[str]:
    """The file's physical lines (split at LF), decoded, without a leading byte-order mark."""
    for number, raw in enumerate(handle, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ImportFileError(
                f"{file_name}: line {number} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                f"position {exc.start + 1}); save the file as UTF-8 and import it again"
            ) from None
        yield text.removeprefix("\ufeff") if number == 1 else text


def _check_header(names: list[str], file_name: str, line: int, required: Collection[str]) -> None:
    twice = sorted({name for name in names if name and names.count(name) > 1})
    if twice:
        raise ImportFileError(
            f"{file_name}: line {line}: column(s) named more than once: {', '.join(twice)}")
    missing = [column for column in required if column not in names]
    if missing:
        raise ImportFileError(
            f"{file_name}: missing required column(s) in the header on line {line}: "
            f"{', '.join(missing)}")
