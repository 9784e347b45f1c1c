"""Flood benchmark: memory of one engine under a flood of alerts with distinct asset ids.

`python -m bench.flood` feeds 1,000,000 alerts, each from an asset never seen before, to one
engine with the worker's default configuration (`max_assets` 500,000, `max_windows` 100,000,
`max_seen_ids` 2,000,000, the shipped rule pack) and prints ONE JSON line: resident memory before, at peak and after,
tracked assets, evictions, and every cap counter. The alerts are built lazily (never held), as
Suricata EVE records parsed by the Suricata adapter (`--no-adapter`: `Alert` objects built
directly), a few seconds of event time apart so sessions and idle eviction play their part.
Run it in a fresh process: peak RSS is the process's.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson

from bench.core import peak_rss_bytes, rss_bytes
from correlators.config import EngineConfig
from correlators.engine import Engine
from schemas.adapters.base import ParseContext
from schemas.adapters.registry import get_adapter
from schemas.models import Alert, Decision, Domain, Severity

__all__ = ["flood", "main"]

T0 = datetime(2024, 3, 1, tzinfo=UTC)
SIGNATURES = ("ET SCAN Nmap", "ET POLICY curl", "ET HUNTING suspicious POST", "ET MALWARE beacon")
MB = 1024 * 1024


def _eve(i: int, step_ms: int) -> bytes:
    when = T0 + timedelta(milliseconds=i * step_ms)
    return orjson.dumps(
        {
            "timestamp": when.isoformat(),
            "event_type": "alert",
            "host": f"flood-{i:07d}",
            "src_ip": f"198.51.{(i >> 8) & 255}.{i & 255}",
            "dest_ip": "10.0.0.1",
            "proto": "TCP",
            "alert": {"signature_id": 2000000 + i % 4, "signature": SIGNATURES[i % 4], "severity": 1 + i % 3},
        }
    )


def alerts(count: int, step_ms: int, *, adapter: bool) -> Iterator[Alert]:
    """`count` alerts, the i-th from asset `flood-<i>`, `step_ms` of event time apart."""
    parser = get_adapter("suricata") if adapter else None
    for i in range(count):
        if parser is not None:
            for item in parser.parse(_eve(i, step_ms), ParseContext(record_id=f"flood:{i + 1}")):
                assert isinstance(item, Alert)
                yield item
        else:
            yield Alert(
                id=f"flood:{i + 1}",
                source="suricata",
                domain=Domain.SECURITY,
                time=T0 + timedelta(milliseconds=i * step_ms),
                asset=f"flood-{i:07d}",
                signature=SIGNATURES[i % 4],
                title=SIGNATURES[i % 4],
                severity=(Severity.HIGH, Severity.MEDIUM, Severity.LOW)[i % 3],
            )


def flood(
    count: int, config: EngineConfig, *, step_ms: int = 10, adapter: bool = True, rules: bool = True
) -> dict[str, object]:
    """Run the flood; the figures as a dict (MB are MiB)."""
    gc.collect()
    before = rss_bytes()
    engine = Engine(config, default_rules=rules)
    decided = 0
    max_tracked = 0
    started = time.perf_counter()
    for n, alert in enumerate(alerts(count, step_ms, adapter=adapter), start=1):
        decided += sum(isinstance(o, Decision) for o in engine.on_alert(alert))
        if n % 10_000 == 0:
            max_tracked = max(max_tracked, engine.tracked_assets())
    max_tracked = max(max_tracked, engine.tracked_assets())
    elapsed = time.perf_counter() - started
    held = rss_bytes()
    decided += sum(isinstance(o, Decision) for o in engine.flush())
    gc.collect()
    stats = engine.stats
    return {
        "alerts": count,
        "distinct_assets": count,
        "adapter": "suricata" if adapter else None,
        "max_assets": config.max_assets,
        "max_windows": config.max_windows,
        "max_seen_ids": config.max_seen_ids,
        "rss_before_mb": round(before / MB, 1),
        "peak_rss_mb": round(peak_rss_bytes() / MB, 1),
        "rss_after_mb": round(held / MB, 1),
        "rss_after_flush_mb": round(rss_bytes() / MB, 1),
        "tracked_assets": engine.tracked_assets(),
        "max_tracked_assets": max_tracked,
        "evicted_assets": stats.evicted_assets,
        "assets_over_cap": stats.assets_over_cap,
        "windows_closed_early": stats.windows_closed_early,
        "baseline_assets": engine.baseline.assets(),
        "rule_groups": len(engine.rules.counting_state()) + len(engine.rules.sequence_state()),
        "seen_ids": len(engine._seen),
        "incidents": len(engine.incidents()),
        "decisions": decided,
        "seconds": round(elapsed, 1),
        "alerts_per_s": round(count / elapsed) if elapsed > 0 else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=1_000_000, help="alerts, each from a new asset")
    parser.add_argument("--max-assets", type=int, default=None, help="engine max_assets (default: the engine's)")
    parser.add_argument("--step-ms", type=int, default=10, help="event time between two alerts")
    parser.add_argument("--no-adapter", action="store_true", help="build Alert objects directly")
    parser.add_argument("--no-default-rules", action="store_true", help="without the shipped rule pack")
    args = parser.parse_args(argv)
    config = EngineConfig()
    if args.max_assets is not None:
        config = replace(config, max_assets=args.max_assets)
    result = flood(
        args.alerts, config, step_ms=args.step_ms, adapter=not args.no_adapter, rules=not args.no_default_rules
    )
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
