"""Email addresses: what a real mailbox can have is accepted and normalised; the rest is refused."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consent_service.domain.addresses import (
    InvalidEmailError,
    address_key,
    full_check,
    normalize_email,
)
from consent_service.domain.purposes import Catalog
from consent_service.domain.tokens import LinkSigner
from consent_service.services.context import ServiceContext


@pytest.mark.parametrize(("raw", "normalized"), [
    ("  Ana.Reyes@Example.org ", "ana.reyes@example.org"),
    ("O'Brien@example.org", "o'brien@example.org"),
    ("first_last-2+news@example.org", "first_last-2+news@example.org"),
    ("7up@example.org", "7up@example.org"),
    ("José.Núñez@example.org", "josé.núñez@example.org"),
    ("हिन्दी@example.org", "हिन्दी@example.org"),  # letters with their combining marks
])
def test_addresses_real_mailboxes_use_are_accepted(raw, normalized):
    assert normalize_email(raw) == normalized


@pytest.mark.parametrize(("raw", "reason"), [
    ("=cmd|'/Ccalc'!A0@example.org", "must start with a letter or a digit"),
    ("+1-555@example.org", "must start with a letter or a digit"),
    ("-rf@example.org", "must start with a letter or a digit"),
    ("@SUM(A1)@example.org", "not a valid email address"),
    ("_admin@example.org", "must start with a letter or a digit"),
    ("a&b@example.org", "may hold only letters, digits and . _ - + ' (not '&')"),
    ("ana=1@example.org", "(not '=')"),
    ("ana|calc@example.org", "(not '|')"),
    ("{ana}@example.org", "must start with a letter or a digit"),
    ("ana%example.com@example.org", "(not '%')"),
])
def test_addresses_valid_to_the_rfc_but_no_real_mailbox_has_are_refused(raw, reason):
    with pytest.raises(InvalidEmailError, match="not a valid email address") as refused:
        normalize_email(raw)
    assert reason in str(refused.value)


def test_an_address_another_system_reports_is_read_without_the_local_part_rule():
    assert normalize_email("A&B@Example.org", strict=False) == "a&b@example.org"
    with pytest.raises(InvalidEmailError):
        normalize_email("no-at-sign.example.org", strict=False)


PLAIN_LOOKING = st.from_regex(
    r"[A-Za-z0-9][A-Za-z0-9._+'-]{0,20}@([A-Za-z0-9-]{1,12}\.){1,3}[A-Za-z]{1,8}", fullmatch=True)


@settings(max_examples=500)
@given(st.one_of(PLAIN_LOOKING, st.text(max_size=40), st.sampled_from([
    "a@b.test", "a@b.LOCAL", "a@xn--abc.com", "a@b-.com", "a.@b.co", "a..b@c.co", "x@b.co.", " a@b.co ",
    "a@b.onion", "a@localhost", "a@b.c", "é@b.co", "a@b--c.co", "o'brien@example.org"])),
    st.booleans())
def test_the_everyday_shortcut_gives_what_the_full_check_gives(raw: str, strict: bool) -> None:
    try:
        expected: str | Exception = full_check(raw.strip(), strict=strict)
    except InvalidEmailError as error:
        expected = error
    if isinstance(expected, Exception):
        with pytest.raises(InvalidEmailError):
            normalize_email(raw, strict=strict)
    else:
        assert normalize_email(raw, strict=strict) == expected


@settings(max_examples=200)
@given(secret=st.binary(min_size=1, max_size=64), addresses=st.lists(st.text(max_size=40),
                                                                      max_size=5))
def test_an_address_key_keyed_once_is_the_address_key(secret, addresses):
    """The services key many addresses with one prepared HMAC (ServiceContext.address_key); each
    copy given an address gives that address's key, whatever came before."""
    ctx = ServiceContext(catalog=Catalog({}), address_secret=secret,
                         signer=LinkSigner(["k"], {}), public_base_url="https://x.example")
    for address in addresses:
        assert ctx.address_key(address) == address_key(secret, address)
