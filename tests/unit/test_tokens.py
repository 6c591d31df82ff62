"""Signed links: kinds kept apart, lifetimes, key rotation, and nothing personal inside."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

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
