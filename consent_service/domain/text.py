"""Text that people and systems hand us: Unicode-normalised (NFC) and free of control characters.

One rule for every entry point (pages, imports, the webhook, the API), so that both databases store
the same thing: PostgreSQL refuses NUL in text, SQLite stores it, and a CR or LF in a name would
reach email bodies and headers. Refused, not silently stripped: a person is told which character in
which field, so a file can be corrected at its source.
"""

from __future__ import annotations

import re
import unicodedata

from consent_service.domain import ConsentServiceError

# Invisible characters that reorder how text is displayed (the "Trojan Source" class): a name with
# U+202E shows its letters backwards to staff and in mail.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
LINE_BREAKS = frozenset("\n")
_ADDRESS = re.compile(r"[^\s<>\"'(),;:]+@[^\s<>\"'(),;:]+")


class UnsafeTextError(ConsentServiceError):
    """Text holding a character no name, note or address may hold; the message names it."""


def unsafe_character(text: str, *, multiline: bool = False) -> str | None:
    """The first character of `text` that no stored text may hold, described as `U+XXXX (NAME)`,
    or None. Forbidden: control characters (C0, DEL, C1) and the bidirectional overrides and
    isolates; with `multiline`, a line feed and a tab are allowed (a note, feedback text)."""
    for char in text:
        if multiline and (char in LINE_BREAKS or char == "\t"):
            continue
        if unicodedata.category(char) == "Cc" or char in BIDI_CONTROLS:
            name = unicodedata.name(char, "control character")
            return f"U+{ord(char):04X} ({name})"
    return None


def clean_text(value: str, *, field: str, multiline: bool = False) -> str:
    """`value` in Unicode NFC, with CR LF and lone CR turned into LF when `multiline`.

    :raise UnsafeTextError: naming `field` and the character, for a control character or a
        bidirectional override anywhere in the text (see `unsafe_character`).
    """
    if value.isascii() and value.isprintable():
        return value  # printable ASCII: already NFC, no control or bidi character (most of an import)
    text = unicodedata.normalize("NFC", value)
    if multiline:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    bad = unsafe_character(text, multiline=multiline)
    if bad is not None:
        raise UnsafeTextError(f"{field} contains a character that is not allowed: {bad}")
    return text


def one_line(text: str, limit: int = 500) -> str:
    """`text` for an operator (a log line, a stored error, a rejected event's reason): one line of
    at most `limit` characters, email addresses masked as `[address]`, and any character no stored
    text may hold shown as `?`."""
    line = " ".join(_ADDRESS.sub("[address]", text).split())
    if len(line) > limit:
        line = line[:limit - 1] + "…"
    return "".join("?" if unsafe_character(char) else char for char in line) or "no detail"
