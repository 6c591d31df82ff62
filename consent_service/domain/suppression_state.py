"""What SendGrid's suppression lists should say about an address, from the decisions in force."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from consent_service.domain.ledger import WHOLE_PURPOSE, Decision, Key, Ruling, resolve
from consent_service.domain.purposes import EMAIL_PURPOSE


@dataclass(frozen=True)
class DesiredSuppressions:
    """One address's entries on SendGrid's lists. `global_unsubscribe`: True present, False absent,
    None leave as it is; `groups`: (group id, suppressed?) for the groups whose entry we decide,
    sorted; a group not named is left as it is."""

    global_unsubscribe: bool | None
    groups: tuple[tuple[int, bool], ...] = ()

    @property
    def decides_anything(self) -> bool:
        return self.global_unsubscribe is not None or bool(self.groups)


def desired_suppressions(address_state: Mapping[Key, Ruling],
                         topic_groups: Mapping[str, int]) -> DesiredSuppressions:
    """The SendGrid state that matches an address's email decisions in force.

    An opt-out of all email in force → on the global unsubscribe list (the groups are then left
    alone: they matter again only after an opt-in). Otherwise an opt-in of all email in force → off
    the global list; and for each topic mapped to a group, the topic's ruling (the later of its own
    and the all-email one) → in the group's suppressions for an opt-out, out of them for an opt-in.
    Where nobody has decided, SendGrid's entry is left as it is: it can only be an unsubscribe we
    have not heard of yet, and reconciliation records it rather than erasing it.
    """
    whole = address_state.get((EMAIL_PURPOSE, WHOLE_PURPOSE))
    if whole is not None and whole.decision is Decision.OPT_OUT:
        return DesiredSuppressions(global_unsubscribe=True)
    groups = []
    for topic, group_id in topic_groups.items():
        ruling = resolve(address_state, EMAIL_PURPOSE, topic)
        if ruling is not None:
            groups.append((group_id, ruling.decision is Decision.OPT_OUT))
    return DesiredSuppressions(global_unsubscribe=False if whole is not None else None,
                               groups=tuple(sorted(groups)))
