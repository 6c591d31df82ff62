"""Evidence from public pages keeps the client's network, never its address."""

from __future__ import annotations

import pytest

from consent_service.domain.evidence import link_evidence, truncate_ip


@pytest.mark.parametrize(("raw", "kept"), [
    ("203.0.113.77", "203.0.113.0/24"),
    ("2001:db8:abcd:12:1:2:3:4", "2001:db8:abcd::/48"),
    ("::ffff:198.51.100.9", "198.51.100.0/24"),
    (" 192.0.2.1 ", "192.0.2.0/24"),
    ("not an address", ""),
    ("", ""),
    (None, ""),
])
def test_an_address_is_cut_to_its_network(raw, kept):
    assert truncate_ip(raw) == kept


def test_link_evidence_keeps_the_network_a_short_user_agent_and_the_link_id():
    evidence = link_evidence("203.0.113.77", "A" * 250, "0123456789abcdef")
    assert evidence == {"token_id": "0123456789abcdef", "ip": "203.0.113.0/24",
                        "user_agent": "A" * 200}


def test_link_evidence_leaves_out_what_the_client_did_not_send():
    assert link_evidence(None, "", "0123456789abcdef") == {"token_id": "0123456789abcdef"}
