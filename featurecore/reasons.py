"""Missing reasons and default actions: names <-> uint8 codes (mirrors csrc/reasons.h)."""

from enum import IntEnum


class Reason(IntEnum):
    """Why a cell of a feature matrix does not hold its stored value (0 = it does)."""

    present = 0
    no_history = 1
    not_applicable = 2
    timeout = 3
    not_computed = 4
    privacy_disabled = 5
    entity_not_found = 6
    stale = 7


#: Every reason a default policy must cover, in code order.
MISSING_REASONS: tuple[str, ...] = tuple(r.name for r in Reason if r is not Reason.present)


class Action(IntEnum):
    """What the assembler does for a missing reason (named priors become constants)."""

    constant = 0
    use_stale_if_available = 1
    null_with_indicator = 2
    fail = 3


#: Default-policy kinds accepted in definitions (``prior`` resolves to ``constant``).
DEFAULT_KINDS: tuple[str, ...] = ("constant", "prior", "use_stale_if_available", "null_with_indicator", "fail")

#: Reasons for which ``use_stale_if_available`` has a stale value to fall back on.
STALE_CAPABLE_REASONS: tuple[str, ...] = ("stale", "timeout")
