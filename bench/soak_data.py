"""Endless real input for the soak: AIT-ADS, Wazuh and Huawei alarms on one event timeline.

The three bundled datasets are merged in event-time order, each rescaled onto the span of
the AIT-ADS alerts (about four days), and replayed lap after lap, every lap shifted one
span later. Wazuh ids get the lap in front so that they stay distinct; the other formats
have no id of their own, so the system names them `<topic>:<partition>:<offset>`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from streams.testing import DATA

AITADS = DATA / "ait-ads" / "russellmitchell_alerts.csv"
WAZUH = DATA / "wazuh-ldsv1" / "ossec_spiral.json"
ALARMS = DATA / "huawei-25V_474N_Microwave" / "Alarm.csv"
ALARM_COLUMNS = "alarm_id,device_id,start_timestamp,end_timestamp"
ALARM_MAP = "time=start_timestamp,asset=device_id,signature=alarm_id,end=end_timestamp,domain:=ops"
_WAZUH_TIME = "%Y-%m-%dT%H:%M:%S.%f%z"

SOURCES = ("aitads", "wazuh", "alarms")


@dataclass(frozen=True, slots=True)
class Row:
    """One record of a lap: its source, event time (offset in the lap) and the original."""

    source: str
    offset: float
    key: bytes
    fields: tuple[bytes, ...] | dict[str, object]


@dataclass(frozen=True, slots=True)
class Record:
    """A record to publish: source, key, value, and its id if the record names it itself."""

    source: str
    key: bytes
    value: bytes
    event_time: float
    alert_id: str | None = None


def _epoch(value: float) -> bytes:
    return f"{value:.3f}".rstrip("0").rstrip(".").encode()


def _wazuh_time(stamp: str) -> float:
    return datetime.strptime(stamp, _WAZUH_TIME).timestamp()  # noqa: DTZ007 (the format has %z)


def load_lap() -> tuple[float, float, list[Row]]:
    """(base epoch, span seconds, rows of one lap in event-time order)."""
    lines = AITADS.read_bytes().splitlines()[1:]
    ait = sorted(
        ((float(line.split(b",", 1)[0]), n, line.split(b",")) for n, line in enumerate(lines)),
        key=lambda r: (r[0], r[1]),
    )
    base, span = ait[0][0], ait[-1][0] - ait[0][0] + 1.0
    rows_a = [Row("aitads", t - base, cells[3], tuple(cells)) for t, _, cells in ait]

    wazuh = [orjson.loads(line) for line in WAZUH.read_bytes().splitlines() if line.strip()]
    w_times = [_wazuh_time(str(obj["timestamp"])) for obj in wazuh]
    w0, w_span = min(w_times), max(w_times) - min(w_times) or 1.0
    rows_w = sorted(
        (
            Row("wazuh", (t - w0) * (span - 1) / w_span, str(obj["agent"]["name"]).encode(), obj)
            for t, obj in zip(w_times, wazuh, strict=True)
        ),
        key=lambda r: r.offset,
    )

    cells_h = [line.split(b",") for line in ALARMS.read_bytes().splitlines()[1:] if line.strip()]
    h_times = [float(c[2]) for c in cells_h]
    h0, h_span = min(h_times), max(h_times) - min(h_times) or 1.0
    rows_h = sorted(
        (Row("alarms", (t - h0) * (span - 1) / h_span, c[1], tuple(c)) for t, c in zip(h_times, cells_h, strict=True)),
        key=lambda r: r.offset,
    )
    merged = list(heapq.merge(rows_a, rows_w, rows_h, key=lambda r: r.offset))
    return base, span, merged


def _render(row: Row, base: float, scale: float, shift: float, lap: int) -> Record:
    t = base + shift + row.offset
    if row.source == "aitads":
        assert isinstance(row.fields, tuple)
        value = b",".join((_epoch(t), *row.fields[1:]))
        return Record("aitads", row.key, value, t)
    if row.source == "wazuh":
        assert isinstance(row.fields, dict)
        obj = dict(row.fields)
        obj["timestamp"] = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")
        obj["id"] = f"soak{lap}-{obj['id']}"
        return Record("wazuh", row.key, orjson.dumps(obj), t, alert_id=str(obj["id"]))
    assert isinstance(row.fields, tuple)
    alarm_id, device, start, end = row.fields[:4]
    end_t = t + (float(end) - float(start)) * scale
    value = b",".join((alarm_id, device, _epoch(t), _epoch(end_t)))
    return Record("alarms", row.key, value, t)


PRIMER_S = 25 * 3600.0  # longer than the engine's baseline warm-up (24 h of event time)


def records(window: tuple[int, int] | None = None, wazuh: int = 40) -> Iterator[Record]:
    """Records forever, lap after lap.

    `window` = (first, count) takes a slice of each lap, with the first `wazuh` Wazuh
    records spread over it (the Wazuh alerts are too sparse to fall in a short slice). A
    slice starts with a primer: the first record of each of its keys, 25 h earlier, so
    that the engines' baseline warm-up is over when the slice itself begins.
    """
    base, span, rows = load_lap()
    primer: list[Row] = []
    if window is not None:
        first, count = window
        spiral = [r for r in rows if r.source == "wazuh"][:wazuh]
        rows = [r for r in rows if r.source != "wazuh"][first : first + count]
        base += rows[0].offset
        rows = [Row(r.source, r.offset - rows[0].offset, r.key, r.fields) for r in rows]
        span = rows[-1].offset + 1.0
        step = span / (len(spiral) + 1)
        spread = [Row(r.source, step * (i + 1), r.key, r.fields) for i, r in enumerate(spiral)]
        rows = list(heapq.merge(rows, spread, key=lambda r: r.offset))
        firsts: dict[tuple[str, bytes], Row] = {}
        for r in rows:
            firsts.setdefault((r.source, r.key), r)
        primer = [Row(r.source, r.offset - PRIMER_S, r.key, r.fields) for r in firsts.values()]
    for row in primer:
        yield _render(row, base, 1.0, 0.0, -1)
    lap = 0
    while True:
        shift = lap * span
        for row in rows:
            yield _render(row, base, 1.0, shift, lap)
        lap += 1
