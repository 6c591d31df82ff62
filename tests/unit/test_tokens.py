"""Signed links: kinds kept apart, lifetimes, key rotation, and nothing personal inside."""

from __future__ import annotations

import base64
import json
import zlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from itsdangerous import URLSafeTimedSerializer

from consent_service.domain.tokens import (
    ExpiredLinkError,
    InvalidLinkError,
    LinkKind,
    LinkSigner,
    token_id,
)

LIFETIMES = {LinkKind.UNSUBSCRIBE: 400, LinkKind.PREFERENCES: 30}


def test_a_link_opens_its_own_kind_only():
    signer = LinkSigner(["k1"], LIFETIMES)
    token = signer.sign(LinkKind.UNSUBSCRIBE, "p_abc", "events")
    claims = signer.verify(LinkKind.UNSUBSCRIBE, token)
    assert (claims.patron_id, claims.topic, claims.token_id) == ("p_abc", "events", token_id(token))
    for other in (LinkKind.PREFERENCES, LinkKind.GUARDIAN, LinkKind.FAMILY):
        with pytest.raises(InvalidLinkError):
            signer.verify(other, token)


def test_a_tampered_link_is_refused():
    signer = LinkSigner(["k1"], LIFETIMES)
    token = signer.sign(LinkKind.PREFERENCES, "p_abc")
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    with pytest.raises(InvalidLinkError):
        signer.verify(LinkKind.PREFERENCES, forged)


def test_a_link_signed_with_a_rotated_out_key_still_works():
    old = LinkSigner(["old-key"], LIFETIMES).sign(LinkKind.UNSUBSCRIBE, "p_abc")
    rotated = LinkSigner(["new-key", "old-key"], LIFETIMES)
    assert rotated.verify(LinkKind.UNSUBSCRIBE, old).patron_id == "p_abc"
    with pytest.raises(InvalidLinkError):
        LinkSigner(["new-key"], LIFETIMES).verify(LinkKind.UNSUBSCRIBE, old)


def test_a_link_past_its_lifetime_has_expired():
    signer = LinkSigner(["k1"], LIFETIMES)
    token = signer.sign(LinkKind.PREFERENCES, "p_abc")
    later = datetime.now(UTC) + timedelta(days=31)
    with pytest.raises(ExpiredLinkError):
        signer.verify(LinkKind.PREFERENCES, token, now=later)
    assert signer.verify(LinkKind.UNSUBSCRIBE, signer.sign(LinkKind.UNSUBSCRIBE, "p"), now=later)


def test_a_link_carries_only_the_opaque_id_and_topic():
    token = LinkSigner(["k1"], LIFETIMES).sign(LinkKind.UNSUBSCRIBE, "p_abc", "events")
    payload = token.split(".")[0]
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    assert decoded == b'{"p":"p_abc","t":"events"}'


def test_new_links_are_signed_with_the_current_key_so_the_old_one_can_be_retired():
    rotated = LinkSigner(["new-key", "old-key"], LIFETIMES)
    token = rotated.sign(LinkKind.UNSUBSCRIBE, "p_abc", "events")
    assert LinkSigner(["new-key"], LIFETIMES).verify(LinkKind.UNSUBSCRIBE, token).patron_id == "p_abc"
    with pytest.raises(InvalidLinkError):
        LinkSigner(["old-key"], LIFETIMES).verify(LinkKind.UNSUBSCRIBE, token)


@given(st.sampled_from(list(LinkKind)), st.text(min_size=1, max_size=40),
       st.one_of(st.none(), st.text(max_size=30)), st.one_of(st.none(), st.text(max_size=30)))
def test_links_are_what_itsdangerous_signs_and_reads_back(kind, patron_id, topic, ref):
    """The fast signer gives itsdangerous's own token whenever compressing would not shorten the
    payload (always, for real ids), and its tokens always read back as signed."""
    signer = LinkSigner(["new-key", "old-key"], LIFETIMES)
    claims = signer.verify(kind, signer.sign(kind, patron_id, topic, ref))
    assert (claims.patron_id, claims.topic, claims.ref) == (patron_id, topic or None, ref or None)
    payload = {"p": patron_id, **({"t": topic} if topic else {}), **({"r": ref} if ref else {})}
    reference = URLSafeTimedSerializer(["old-key", "new-key"], salt=f"consent-service.{kind.value}-link")
    raw = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    for _ in range(3):  # the same second for both, unless a second boundary falls between them
        ours, theirs = signer.sign(kind, patron_id, topic, ref), reference.dumps(payload)
        if ours.rsplit(".", 2)[1] == theirs.rsplit(".", 2)[1]:
            break
    if len(zlib.compress(raw)) >= len(raw) - 1:
        assert ours == theirs
    else:
        assert reference.loads(ours) == payload


@given(st.sampled_from(list(LinkKind)), st.text(min_size=1, max_size=40),
       st.one_of(st.none(), st.text(max_size=30)))
def test_a_signer_for_many_links_gives_the_tokens_sign_gives(kind, patron_id, topic):
    signer = LinkSigner(["new-key", "old-key"], LIFETIMES)
    many = signer.signer(kind, topic)
    for _ in range(3):  # the same second for both, unless a second boundary falls between them
        ours, one = many(patron_id), signer.sign(kind, patron_id, topic)
        if ours.rsplit(".", 2)[1] == one.rsplit(".", 2)[1]:
            break
    assert ours == one
    claims = signer.verify(kind, ours)
    assert (claims.patron_id, claims.topic) == (patron_id, topic or None)
