"""The minimal evidence kept with a decision made on a public page: network, user agent, link id."""

from __future__ import annotations

import ipaddress

USER_AGENT_LIMIT = 200
IPV4_PREFIX = 24
IPV6_PREFIX = 48


def truncate_ip(raw: str | None) -> str:
    """The network a client address belongs to, never the address itself: IPv4 to its /24, IPv6 to
    its /48 (an IPv4-mapped IPv6 address counts as IPv4). Empty when there is no usable address."""
    if not raw:
        return ""
    try:
        address = ipaddress.ip_address(raw.strip())
    except ValueError:
        return ""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = IPV4_PREFIX if address.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def link_evidence(ip: str | None, user_agent: str | None, token_id: str) -> dict[str, str]:
    """What a decision made through a signed link keeps as evidence: the client's network, its user
    agent cut to 200 characters, and the link's id (never the link itself)."""
    evidence = {"token_id": token_id}
    network = truncate_ip(ip)
    if network:
        evidence["ip"] = network
    agent = (user_agent or "").strip()[:USER_AGENT_LIMIT]
    if agent:
        evidence["user_agent"] = agent
    return evidence
