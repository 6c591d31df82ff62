"""Reading the CSV files that imports take, as Excel and the ILSs write them (UTF-8 with or without a
byte-order mark, or Windows-1252; commas, semicolons or tabs; any line ending), with the header
checked; and reporting what the imports did."""

from __future__ import annotations

import codecs
import csv
import difflib
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from consent_service.domain import ConsentServiceError
from consent_service.domain.text import UnsafeTextError, clean_text


class ImportFileError(ConsentServiceError):
    """A file that cannot be imported at all: not text we can read, empty, or missing a required
    column."""


ENCODINGS = ("utf-8", "windows-1252")  # what `--encoding` accepts; the default is to detect
DELIMITERS = {",": "commas", ";": "semicolons", "\t": "tabs"}
_SAMPLE = 1 << 16  # bytes read to tell the encoding's tell-tales and the header's delimiter


@dataclass(frozen=True)
class RowProblem:
    """Why a data row was rejected; `line` is the file's physical line (the header is line 1)."""

    line: int
    message: str


@dataclass
class ImportReport:
    """What an import did: how many rows ended which way, each rejected row with its reasons, and
    notes about the file (the columns it ignored)."""

    problems: list[RowProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

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
    (trimmed, and in Unicode NFC by `clean_text`), and what is wrong with the row as text: more or
    fewer fields than the header (a short row must not blank the columns it lacks), or a value
    holding a character no stored text may hold. Such a value is left out of `values` and its
    column is in `refused`, so that no check and no query sees it."""

    line: int
    values: dict[str, str]
    problems: tuple[str, ...] = ()
    refused: frozenset[str] = frozenset()


@dataclass(frozen=True)
class CsvFile:
    """A checked CSV file: its header as written, its data rows, and notes for the operator about
    columns the import ignored."""

    name: str
    header_line: int
    header: tuple[str, ...]
    rows: list[CsvRow]
    notes: tuple[str, ...] = ()

    def header_error(self, message: str) -> ImportFileError:
        """An error about the header, showing the header that was found."""
        return ImportFileError(_header_message(self.name, self.header_line, self.header, message))


def read_csv(path: Path, *, required: Collection[str], known: Collection[str],
             multiline: Collection[str] = (), allow_partial: bool = False,
             encoding: str | None = None, expected: Collection[str] = ()) -> CsvFile:
    """The data rows of a whole CSV file (blank lines left out), checked before any row is used.

    The file is read as `open_table` reads it (encoding and delimiter detected unless `encoding`
    is given). Header names are trimmed and matched case-insensitively. A missing `required`
    column, a column named twice, bytes that are no text, a quote left open, or an empty file raise
    ImportFileError naming the line; an error about the header shows the header found, and says
    when it holds `;` or a tab although another delimiter was taken.

    A column not in `known` is ignored (the ILS's exports carry many), and listed in the file's
    `notes`; so is one in `expected` (a column the system that wrote the file documents, which
    this import does not use), but it is never taken for a misspelling. One that looks like a
    misspelt known column the header lacks (see `_closest`:
    `birthdate` for `birth_date`, `email_address` for `email`) refuses the file unless
    `allow_partial`: the misspelt column would be ignored in silence, and a patron without a birth
    date counts as an adult. With `allow_partial`, it is noted and ignored.

    Every value goes through `clean_text` (multi-line for the `multiline` columns); a value it
    refuses makes a row problem naming the column and the character. A row with more or fewer
    fields than the header has a problem too, for the import to reject with its line number.
    """
    with open_csv(path, required=required, known=known, multiline=multiline,
                  allow_partial=allow_partial, encoding=encoding, expected=expected) as (header, rows):
        return CsvFile(header.name, header.header_line, header.header, list(rows), header.notes)


@contextmanager
def open_csv(path: Path, *, required: Collection[str], known: Collection[str],
             multiline: Collection[str] = (), allow_partial: bool = False,
             encoding: str | None = None, expected: Collection[str] = ()
             ) -> Iterator[tuple[CsvFile, Iterator[CsvRow]]]:
    """`read_csv` a row at a time, for a file too large to hold: the file with its header checked
    (and no rows), and its data rows as they are read. A row that is not CSV, or bytes that are no
    text, raise ImportFileError when the reading reaches them: a caller writing as it reads must
    roll back then."""
    with open_table(path, encoding) as table:
        written = table.header
        names = [cell.lower() for cell in written]
        notes = table.notes + _check_header(path.name, table.header_line, written, required, known,
                                            allow_partial, expected)

        def rows() -> Iterator[CsvRow]:
            while (record := table.records.next()) is not None:
                if not any(cell.strip() for cell in record):
                    continue
                yield _row(table.records.start, names, record, known, multiline)

        yield CsvFile(path.name, table.header_line, written, [], notes), rows()


@dataclass
class Table:
    """An open CSV file positioned after its header: the header as written (trimmed), its line,
    the records after it, and notes on how the file was read (an encoding or delimiter that is not
    UTF-8 and commas)."""

    header: tuple[str, ...]
    header_line: int
    records: _Records
    notes: tuple[str, ...]


@contextmanager
def open_table(path: Path, encoding: str | None = None) -> Iterator[Table]:
    """Open a CSV file as Excel and the ILSs write it, and read its header (the first line that is
    not blank).

    Encoding: UTF-8 (a leading byte-order mark is dropped) unless the file holds bytes that are not
    UTF-8 and all of them are Windows-1252 (Excel's "CSV" on Windows), or `encoding` says which of
    `ENCODINGS` it is. A UTF-16 file (a byte-order mark, or NUL bytes throughout; also what a
    spreadsheet's own format looks like) or one with bytes that are neither is refused, naming the
    line and the byte. (A stray NUL in a value is the row's problem, as any control character.)
    Delimiter: the one of `DELIMITERS` the header line holds most of, outside quotes (a comma on a
    tie). Line endings: LF, CRLF or CR alone.
    """
    with path.open("rb") as handle:
        sample = handle.read(_SAMPLE)
        chosen = _encoding(path, handle, sample, encoding)
        handle.seek(0)
        delimiter = sniff_delimiter(_first_line(sample, chosen))
        records = _Records(handle, path.name, chosen, delimiter)
        header: list[str] | None = []
        while header is not None and not any(cell.strip() for cell in header):
            header = records.next()
        if header is None:
            raise ImportFileError(
                f"{path.name}: the file is empty; its first line must be the header")
        notes = []
        if chosen != "utf-8":
            notes.append(f"read as {chosen} text"
                         + ("" if encoding else " (the file is not UTF-8; pass --encoding to say)"))
        if delimiter != ",":
            notes.append(f"columns are separated by {DELIMITERS[delimiter]}")
        yield Table(tuple(cell.strip() for cell in header), records.start, records, tuple(notes))


def _encoding(path: Path, handle: BinaryIO, sample: bytes, asked: str | None) -> str:
    """The file's encoding: `asked`, else UTF-8 if every byte is, else Windows-1252 if every byte
    is; refused when NUL bytes say it is UTF-16 or no text at all."""
    if asked is not None:
        if asked.lower() not in ENCODINGS:
            raise ImportFileError(
                f"{path.name}: encoding {asked!r} is not one of: {', '.join(ENCODINGS)}")
        return asked.lower()
    if _looks_utf16(sample):
        raise ImportFileError(
            f"{path.name}: the file holds NUL bytes, so it is not CSV text (UTF-16, or a "
            f"spreadsheet's own format?); save it as \"CSV UTF-8\" and import it again")
    handle.seek(0)
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for block in iter(lambda: handle.read(_SAMPLE), b""):
            decoder.decode(block)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        pass
    else:
        return "utf-8"
    handle.seek(0)
    for number, raw in enumerate(handle, start=1):
        try:
            raw.decode("windows-1252")
        except UnicodeDecodeError as exc:
            raise ImportFileError(
                f"{path.name}: line {number} is neither UTF-8 nor Windows-1252 text (byte "
                f"0x{raw[exc.start]:02x} at position {exc.start + 1}); save the file as "
                f"\"CSV UTF-8\" and import it again") from None
    return "windows-1252"


def decode_text(data: bytes, what: str) -> str:
    """Uploaded bytes as text, read as files are (`open_table`): UTF-8 with or without a byte-order
    mark, else Windows-1252; ImportFileError naming `what` when they are neither (or UTF-16)."""
    if _looks_utf16(data):
        raise ImportFileError(f"{what} is not CSV text (UTF-16, or a spreadsheet's own format?); "
                              f"save it as \"CSV UTF-8\"")
    for encoding in ("utf-8-sig", "windows-1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ImportFileError(f"{what} is neither UTF-8 nor Windows-1252 text; save it as \"CSV UTF-8\"")


def _looks_utf16(sample: bytes) -> bool:
    """A UTF-16 byte-order mark, or NUL bytes throughout (UTF-16 without one, or a spreadsheet's
    own format); a stray NUL in a value is its row's problem instead."""
    return sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or (
        sample.count(b"\x00") * 10 > len(sample))


def _first_line(sample: bytes, encoding: str) -> str:
    text = sample.decode(encoding, errors="replace").removeprefix("\ufeff")
    for line in text.splitlines():
        if line.strip():
            return line
    return ""


def sniff_delimiter(line: str) -> str:
    """The delimiter a header line holds most of outside quotes; a comma on a tie or none."""
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(counts, key=lambda char: (counts[char], char == ","))
    return best if counts[best] else ","


def _row(line: int, names: list[str], record: list[str], known: Collection[str],
         multiline: Collection[str]) -> CsvRow:
    problems: list[str] = []
    if len(record) != len(names):
        problems.append(f"the row has {len(record)} fields but the header has {len(names)}")
    return row_of_values(line, zip(names, record, strict=False), known, multiline, problems)


def row_of_values(line: int, pairs: Iterable[tuple[str, str]], known: Collection[str],
                  multiline: Collection[str], problems: Sequence[str] = ()) -> CsvRow:
    """A row from (column, value) pairs, read as a file's are: a column not in `known` is left
    out; every value is trimmed and goes through `clean_text` (multi-line for the `multiline`
    columns), and a value it refuses is a problem naming the column and the character."""
    values: dict[str, str] = {}
    found = list(problems)
    refused: set[str] = set()
    for name, value in pairs:
        if name not in known:
            continue
        try:
            values[name] = clean_text(value.strip(), field=name, multiline=name in multiline)
        except UnsafeTextError as exc:
            found.append(str(exc))
            refused.add(name)
    return CsvRow(line, values, tuple(found), frozenset(refused))


class _Records:
    """The records of a CSV file, each with the physical line it starts on (`start`)."""

    def __init__(self, handle: BinaryIO, file_name: str, encoding: str = "utf-8",
                 delimiter: str = ",") -> None:
        self._file_name = file_name
        self._reader = csv.reader(_lines(handle, file_name, encoding), delimiter=delimiter,
                                  strict=True)
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


def _lines(handle: BinaryIO, file_name: str, encoding: str) -> Iterator[str]:
    """The file's physical lines (split at LF, CRLF or a lone CR), decoded, without a leading
    byte-order mark. The encoding was checked on the whole file, so a decoding error here means
    the file changed while it was read."""
    for number, raw in enumerate(handle, start=1):
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            raise ImportFileError(
                f"{file_name}: line {number} is not {encoding} text (byte 0x{raw[exc.start]:02x} "
                f"at position {exc.start + 1}); save the file as UTF-8 and import it again"
            ) from None
        if number == 1:
            text = text.removeprefix("\ufeff")
        if "\r" in text.rstrip("\r\n"):  # old Mac line ends: one physical line holds several
            yield from text.replace("\r\n", "\n").replace("\r", "\n").splitlines(keepends=True)
        else:
            yield text


def _check_header(file_name: str, line: int, header: tuple[str, ...], required: Collection[str],
                  known: Collection[str], allow_partial: bool, expected: Collection[str] = ()
                  ) -> tuple[str, ...]:
    """Refuse a header the import cannot trust; the notes about the columns it will ignore."""
    names = [name.lower() for name in header]
    twice = sorted({name for name in names if name and names.count(name) > 1})
    if twice:
        raise ImportFileError(_header_message(
            file_name, line, header, f"column(s) named more than once: {', '.join(twice)}"))
    absent = [column for column in known if column not in names]
    unknown = [name for name in names if name and name not in known]
    guesses = {name: None if name in expected else _closest(name, absent) for name in unknown}
    guessed = "; ".join(f"{name!r}: did you mean {guess!r}?"
                        for name, guess in guesses.items() if guess)
    missing = [column for column in required if column not in names]
    if missing:
        message = f"missing required column(s): {', '.join(missing)}"
        raise ImportFileError(_header_message(
            file_name, line, header, f"{message} ({guessed})" if guessed else message))
    if guessed and not allow_partial:
        raise ImportFileError(_header_message(
            file_name, line, header,
            f"unknown column(s) that look like misspelt known ones: {guessed}; correct the "
            f"header, or pass --allow-partial to import without them"))
    notes = []
    if guessed:
        notes.append(f"ignored, as --allow-partial allows, column(s) that look misspelt: {guessed}")
    ignored = [name for name, guess in guesses.items() if not guess]
    if ignored:
        notes.append(f"ignored column(s) this import does not use: {', '.join(ignored)}")
    return tuple(notes)


def _closest(name: str, candidates: Sequence[str]) -> str | None:
    """The known column `name` looks like a misspelling of, if any: one that is `name` with words
    added after an underscore or the other way round (`first` and `first_name`, `email_address`
    and `email`), else difflib's closest match (`birthdate` and `birth_date`)."""
    for candidate in candidates:
        if name.startswith(candidate + "_") or candidate.startswith(name + "_"):
            return candidate
    close = difflib.get_close_matches(name, candidates, n=1)
    return close[0] if close else None


def _header_message(file_name: str, line: int, header: tuple[str, ...], message: str) -> str:
    """One line: the file, the header's line, what is wrong, the header found, and a delimiter that
    looks wrong (the header then reads as one column)."""
    found = ",".join(header)
    text = f"{file_name}: line {line}: {message}; the header found is {found!r}"
    delimiters = [name for char, name in ((";", "semicolons"), ("\t", "tabs")) if char in found]
    if delimiters:
        text += (f"; it holds {' and '.join(delimiters)}, so the file looks saved with the wrong "
                 f"delimiter: save it as CSV with commas")
    return text
