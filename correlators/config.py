"""Engine settings: windows, thresholds and caps, as one frozen definition."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

__all__ = ["EngineConfig"]


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Tunable knobs of the correlation core; defaults are generic, not dataset-tuned."""

    # evidence windows (per asset)
    session_gap: timedelta = timedelta(minutes=15)
    max_window: timedelta = timedelta(hours=2)
    allowed_lateness: timedelta = timedelta(minutes=5)
    # incident lifecycle
    quiet_period: timedelta = timedelta(minutes=60)
    reopen_window: timedelta = timedelta(hours=12)
    update_interval: timedelta = timedelta(seconds=30)
    open_threshold: float = 14.0
    # baselines
    warmup: timedelta = timedelta(hours=24)
    warmup_weight: float = 0.1  # novelty multiplier while no baseline exists yet
    baseline_half_life: timedelta = timedelta(days=3)
    routine_count: float = 5.0
    # dedup / flapping
    dedup_window: timedelta = timedelta(minutes=10)
    flap_transitions: int = 4
    flap_window: timedelta = timedelta(minutes=30)
    # cross-asset grouping
    campaign_window: timedelta = timedelta(minutes=10)
    topology_window: timedelta = timedelta(minutes=5)
    corroboration_window: timedelta = timedelta(minutes=60)
    # Learned alarm-type precedence (opt-in): a different alarm type is accepted as a
    # consequence when its learned lift reaches this value. None = only the same alarm type
    # groups. Measured on the Huawei data: of the links learned with lift >= 2, only ~25%
    # matched the expert DAG, and grouping by them dropped causal consistency from 1.0 to
    # 0.54, so it is off by default.
    precedence_min_lift: float | None = None
    # caps (bounded state)
    max_alert_ids_per_event: int = 50
    max_timeline: int = 200
    max_pending_per_asset: int = 100_000
    max_seen_ids: int = 2_000_000
    max_assets: int = 500_000
    max_windows: int = 100_000
    max_idle: timedelta = timedelta(days=30)
    max_rule_groups: int = 100_000  # per correlation rule: least recently updated group dropped beyond
    # Resolved and merged incidents are forgotten this long (event time) after they resolved:
    # a reopen after that opens a new incident. None keeps them all (`socnoc replay` writes
    # every incident at the end); the streaming worker sets reopen_window + 1 h.
    retain_resolved: timedelta | None = None
