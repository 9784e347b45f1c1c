"""Evidence scoring: what each alert adds to its asset's window, and the window's total.

Score = (per-signature evidence + detector diversity + tactic progression + rule findings)
x asset criticality x exposure, x1.5 when security and ops signals meet on the asset.
Per-signature evidence = severity weight x novelty x 3 for its first alert in the window,
plus a capped log2 bonus for repeats (a burst).
"""

from __future__ import annotations

import math

from schemas.models import Severity

__all__ = ["SEVERITY_WEIGHT", "NOVEL", "NOVEL_HERE", "UNCOMMON", "criticality_factor", "repeat_bonus"]

SEVERITY_WEIGHT: dict[Severity, float] = {
    Severity.INFO: 0.5,
    Severity.LOW: 1.0,
    Severity.MEDIUM: 2.0,
    Severity.HIGH: 4.0,
    Severity.CRITICAL: 8.0,
}
NOVEL = 1.0  # never seen on any asset
NOVEL_HERE = 0.5  # never seen on this asset, known on one or two others
UNCOMMON = 0.25  # seen here a few times, or new here but common in the fleet
FIRST_WEIGHT = 3.0
DETECTOR_BONUS = 2.0
TACTIC_BONUS = 2.5
CROSS_DOMAIN = 1.5


def criticality_factor(criticality: int, internet: bool) -> float:
    """Asset importance multiplier: criticality 1..5 -> 0.7..1.4, x1.15 if internet-facing."""
    factor = 0.7 + 0.175 * (min(max(criticality, 1), 5) - 1)
    return factor * (1.15 if internet else 1.0)


def repeat_bonus(count: int, weight: float) -> float:
    """Extra evidence from repeats of one signature in a window (log-scaled, capped)."""
    if count <= 1:
        return 0.0
    return 0.5 * min(4.0, math.log2(count)) * weight
