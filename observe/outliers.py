"""The outlier rule: an instance whose value stands out from its peers' median by several
median absolute deviations. Pure: values in, flags out.

An average hides the one bad pod (3%, 5% and 15% errors average to 7.7%); the median and
the MAD are not pulled by it: median 5%, MAD 2%, so 15% > 5% + 3 × 2% is flagged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from statistics import median


@dataclass(frozen=True)
class Rule:
    """Flag x when x > median + k × max(MAD, floor); `floor` keeps identical peers (MAD 0)
    from flagging a tiny difference; at least `min_peers` values are needed to compare."""

    k: float = 3.0
    floor: float = 0.0
    min_peers: int = 3


@dataclass(frozen=True)
class Verdict:
    """Why a value was flagged: the median and MAD it was compared with, and the bound."""

    key: str
    value: float
    median: float
    mad: float
    bound: float


def outliers(values: Mapping[str, float], rule: Rule) -> list[Verdict]:
    """The keys whose value is above the rule's bound, highest first."""
    if len(values) < rule.min_peers:
        return []
    mid = median(values.values())
    mad = median(abs(v - mid) for v in values.values())
    bound = mid + rule.k * max(mad, rule.floor)
    found = [Verdict(key, value, mid, mad, bound) for key, value in values.items() if value > bound]
    return sorted(found, key=lambda v: -v.value)
