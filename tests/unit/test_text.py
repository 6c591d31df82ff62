"""Stored text: NFC, no control characters, no bidirectional overrides."""

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent_service.domain.text import UnsafeTextError, clean_text, unsafe_character


@pytest.mark.parametrize("bad", ["a\x00b", "Ann\r\nBcc: x@example.org", "evil\u202eman", "tab\there",
                                 "del\x7f", "c1\x85"])
def test_control_and_bidi_characters_are_refused_with_their_name(bad):
    with pytest.raises(UnsafeTextError, match=r"first_name contains .*U\+"):
        clean_text(bad, field="first_name")


def test_multiline_text_keeps_line_breaks_and_tabs_but_not_nul():
    assert clean_text("one\r\ntwo\rthree\tfour", field="note", multiline=True) == "one\ntwo\nthree\tfour"
    with pytest.raises(UnsafeTextError, match="U\\+0000"):
        clean_text("one\x00", field="note", multiline=True)


def test_text_is_normalised_to_nfc():
    assert clean_text("Jose\u0301", field="first_name") == "Jos\u00e9"


@given(st.text())
def test_clean_text_output_never_holds_an_unsafe_character(text):
    try:
        cleaned = clean_text(text, field="x")
    except UnsafeTextError:
        return
    assert unsafe_character(cleaned) is None


@given(st.text(alphabet=st.characters(max_codepoint=0x7F)) | st.text(), st.booleans())
def test_printable_ascii_shortcut_gives_what_the_full_rule_gives(value: str, multiline: bool) -> None:
    """clean_text returns printable ASCII as it is; that is what normalising and checking give."""
    expected = unicodedata.normalize("NFC", value)
    if multiline:
        expected = expected.replace("\r\n", "\n").replace("\r", "\n")
    if unsafe_character(expected, multiline=multiline) is not None:
        with pytest.raises(UnsafeTextError):
            clean_text(value, field="name", multiline=multiline)
    else:
        assert clean_text(value, field="name", multiline=multiline) == expected
