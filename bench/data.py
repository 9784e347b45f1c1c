"""Benchmark inputs built from the real AIT-ADS alerts: the file itself, and streams derived from it.

The synthetic stream continues the AIT-ADS timeline copy after copy: copy `k` is the real
data shifted by `k` whole periods (whole days, so hour-of-day patterns stay true), with every
host and address renamed to a copy of its own (`mail` -> `mail~k`, `172.19.130.4` ->
`10.k.k.i`), so the stream keeps the real mix of signatures, rates and bursts while the
number of assets grows with its length. Labels are kept verbatim (no adapter reads them).
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from schemas.adapters.aitads import AitAdsAdapter
from schemas.adapters.base import ParseContext
from schemas.adapters.csvline import join_cells
from schemas.models import Alert

__all__ = [
    "AITADS",
    "DAY",
    "BaseData",
    "load_base",
    "synthetic_rows",
    "write_csv",
    "state_probe_rows",
    "kafka_records",
    "Records",
    "KAFKA_MAP",
    "storm_records",
    "COLUMNS",
]

ROOT = Path(__file__).resolve().parents[1]
AITADS = ROOT / "examples" / "data" / "ait-ads" / "russellmitchell_alerts.csv"
DAY = 86400
COLUMNS = ("time", "name", "ip", "host", "short", "time_label", "event_label")


@dataclass(frozen=True)
class BaseData:
    """The AIT-ADS rows in (time, line) order, and the facts the derived streams need."""

    header: str
    rows: tuple[tuple[str, ...], ...]
    start: int
    end: int
    hosts: tuple[str, ...]
    ips: tuple[str, ...]

    @property
    def period(self) -> int:
        """Time shift between two copies: the data's span rounded up to whole days."""
        return max(1, math.ceil((self.end - self.start + 1) / DAY)) * DAY


def load_base(path: Path = AITADS) -> BaseData:
    """Read the AIT-ADS CSV (a stable sort by time puts its one late row in place)."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        if tuple(header) != COLUMNS:
            raise ValueError(f"{path}: unexpected AIT-ADS header {header}")
        rows = [tuple(row) for row in reader if row]
    rows.sort(key=lambda r: int(r[0]))
    times = [int(r[0]) for r in rows]
    return BaseData(
        header=",".join(header),
        rows=tuple(rows),
        start=min(times),
        end=max(times),
        hosts=tuple(sorted({r[3] for r in rows})),
        ips=tuple(sorted({r[2] for r in rows if r[2]})),
    )


def _copy_ip(ips: dict[str, int], ip: str, copy: int) -> str:
    if not ip:
        return ip
    if copy == 0:
        return ip
    return f"10.{(copy >> 8) & 255}.{copy & 255}.{ips[ip] + 1}"


def synthetic_rows(base: BaseData, count: int) -> Iterator[tuple[str, ...]]:
    """`count` rows: the AIT-ADS timeline continued copy after copy, hosts renamed per copy."""
    ips = {ip: i for i, ip in enumerate(base.ips)}
    period = base.period
    made = 0
    copy = 0
    while made < count:
        shift = copy * period
        for time, name, ip, host, short, time_label, event_label in base.rows:
            if made >= count:
                return
            yield (
                str(int(time) + shift),
                name,
                _copy_ip(ips, ip, copy),
                host if copy == 0 else f"{host}~{copy}",
                short,
                time_label,
                event_label,
            )
            made += 1
        copy += 1


def state_probe_rows(
    base: BaseData, assets: int, per_asset: int, *, span_s: float = 600.0
) -> Iterator[tuple[str, ...]]:
    """`per_asset` real alerts on each of `assets` fresh hosts, all within `span_s` of event time.

    Asset `i` replays `per_asset` consecutive real rows of one real host (its own sequence of
    signatures), renamed `probe-<i>` with an address of its own. The probe starts one period
    after the real data ends, and `span_s` is shorter than the session gap and the dedup
    window, so every asset is still active (baseline, dedup and window state) at the end.
    """
    by_host: dict[str, list[tuple[str, ...]]] = {}
    for row in base.rows:
        by_host.setdefault(row[3], []).append(row)
    sequences = [rows for _, rows in sorted(by_host.items()) if len(rows) >= per_asset]
    t0 = base.end + base.period
    step = span_s / max(1, assets * per_asset)
    for i in range(assets):
        rows = sequences[i % len(sequences)]
        first = (i * per_asset) % (len(rows) - per_asset + 1)
        ip = f"10.{200 + (i >> 16 & 31)}.{i >> 8 & 255}.{i & 255}"
        for j, row in enumerate(rows[first : first + per_asset]):
            yield (f"{t0 + (i * per_asset + j) * step:.3f}", row[1], ip, f"probe-{i}", row[4], "-", "-")


def write_csv(path: Path, header: str, rows: Iterator[tuple[str, ...]]) -> int:
    """Write rows as a CSV file with `header`; returns the number of data rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write(header + "\n")
        for row in rows:
            handle.write(join_cells(row) + "\n")
            n += 1
    return n


@dataclass(frozen=True)
class Records:
    """Kafka input for one run: alert ids, JSON values and keys (the host, a shipper's choice)."""

    ids: tuple[str, ...]
    values: tuple[bytes, ...]
    keys: tuple[bytes, ...]
    closing: bytes = b""  # produced after the run: moves event time on (see kafka_records)

    def __len__(self) -> int:
        return len(self.ids)


# The Kafka benchmarks send JSON (the raw pipeline must `orjson.loads` the very same records);
# the worker reads them with the generic `jsonl` adapter and this map. Source and domain are
# what the AIT-ADS adapter makes of the row, so the worker sees the alerts replay would.
KAFKA_MAP = "id=id,time=time,asset=host,ip=ip,signature=short,title=name,source=source,domain=domain"


def kafka_records(base: BaseData, first: int, count: int, *, run: str) -> Records:
    """Rows `first`..`first + count` of the synthetic stream as JSON records with ids `<run>:<n>`."""
    rows = itertools.islice(synthetic_rows(base, first + count), first, None)
    return _records(enumerate(rows, start=first), run, base.start)


def storm_records(base: BaseData, assets: int, per_asset: int, *, run: str) -> Records:
    """A storm of new assets as JSON records (ids `<run>:<n>`): `per_asset` real alerts on each
    of `assets` hosts never seen before, all within ten minutes of event time (the rows of
    `state_probe_rows`), so every asset still has alerts waiting in its window at the end."""
    return _records(enumerate(state_probe_rows(base, assets, per_asset)), run, base.end)


def _records(rows: Iterable[tuple[int, tuple[str, ...]]], run: str, start: float) -> Records:
    adapter = AitAdsAdapter()
    ids: list[str] = []
    values: list[bytes] = []
    keys: list[bytes] = []
    last = start
    for n, row in rows:
        alert_id = f"{run}:{n}"
        parsed = adapter.parse(join_cells(row).encode(), ParseContext(record_id=alert_id))[0]
        if not isinstance(parsed, Alert):
            raise ValueError(f"row {n} is not an alert: {parsed.error}")
        when = float(row[0])
        obj = {
            "id": alert_id,
            "time": int(when) if when.is_integer() else when,
            "host": row[3],
            "ip": row[2],
            "short": row[4],
            "name": row[1],
            "source": parsed.source,
            "domain": parsed.domain.value,
        }
        ids.append(alert_id)
        values.append(orjson.dumps(obj))
        keys.append(row[3].encode())
        last = max(last, when)
    # A live stream's event time keeps moving; a finite run's would stop with alerts still
    # waiting in open windows. One more alert two days later closes them (like the end of
    # a replay), so every input of the run gets its decision.
    closing = {
        "id": f"{run}:end",
        "time": math.ceil(last) + 2 * DAY,
        "host": "bench-end-of-run",
        "ip": "",
        "short": "BENCH-END",
        "name": "bench: end of run",
        "source": "bench",
        "domain": "ops",
    }
    return Records(tuple(ids), tuple(values), tuple(keys), orjson.dumps(closing))

