"""AIT Alert Data Set CSV (`time,name,ip,host,short,time_label,event_label`) -> Alert.

`short` is the signature, `name` the title, the detector prefix of `name` (`Wazuh: ...`,
`Suricata: ...`, `AMiner: ...`) the source, `host` the asset and `ip` its address. The id
is the record id (`<file>:<line>`). The label columns `time_label` and `event_label` are
ground truth for evaluation: they are never read, and `raw` is the line without them, so
blanking the labels gives identical alerts.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final

from schemas.adapters.base import ParseContext, Parsed, decode_text
from schemas.adapters.csvline import CsvLayout, join_cells
from schemas.adapters.fields import alert_from, parse_epoch_text
from schemas.errors import BadTimestamp, MissingField
from schemas.models import Domain

__all__ = ["AitAdsAdapter", "AITADS_COLUMNS", "LABEL_COLUMNS"]

AITADS_COLUMNS = ("time", "name", "ip", "host", "short", "time_label", "event_label")
LABEL_COLUMNS = frozenset({"time_label", "event_label"})
_SOURCES: Final = {"wazuh": "wazuh", "suricata": "suricata", "aminer": "aminer"}
# Detectors here report on security logs and on system metrics alike; an alert about a
# resource metric (CPU, memory, disk, load) is an operations signal, whoever raised it.
_OPS_TERMS: Final = re.compile(r"\b(cpu|memory|disk|load average|swap)\b", re.IGNORECASE)
_MAX_NAMES: Final = 4096  # remembered distinct `name` cells (bounded: names come from the input)
_MAX_SHARED: Final = 16_384  # remembered signature strings


class AitAdsAdapter:
    """AIT-ADS alert CSV rows; option `columns` is the header. Resource-metric alerts are ops."""

    name = "aitads"

    def __init__(self, options: dict[str, str] | None = None) -> None:
        columns = (options or {}).get("columns")
        layout = CsvLayout.from_header(columns) if columns else CsvLayout(AITADS_COLUMNS)
        self._layout = layout
        self._time = layout.position("time")
        self._name = layout.position("name")
        self._ip = layout.position("ip")
        self._host = layout.position("host")
        self._short = layout.position("short")
        self._keep = tuple(
            i for i, column in enumerate(layout.columns) if column not in LABEL_COLUMNS
        )
        # Consecutive rows often share a second: reuse the last parsed time.
        self._last_stamp = ""
        self._last_time = parse_epoch_text("0", "time")
        # When the labels are the trailing columns, `raw` is a prefix of the line.
        self._labels_last = self._keep == tuple(range(len(self._keep)))
        self._names: dict[str, tuple[str, str, Domain]] = {}
        self._shared: dict[str, str] = {}

    def _name_facts(self, name: str) -> tuple[str, str, Domain]:
        """The title (one shared copy), detector and domain a `name` cell gives, remembered.

        A file has a few hundred distinct names: each is checked once, and its alerts share
        one title string instead of holding a copy each.
        """
        if not name:
            raise MissingField("name is empty")
        prefix, colon, _ = name.partition(":")
        if not colon or not prefix.strip():
            raise MissingField(f"name {name[:60]!r} has no 'Detector:' prefix")
        source = prefix.strip().lower()
        source = _SOURCES.get(source, source)
        facts = (name, source, Domain.OPS if _OPS_TERMS.search(name) else Domain.SECURITY)
        if len(self._names) >= _MAX_NAMES:
            self._names.clear()
        self._names[name] = facts
        return facts

    def _time_of(self, stamp: str) -> datetime:
        if stamp != self._last_stamp:
            self._last_time = parse_epoch_text(stamp, "time")
            self._last_stamp = stamp
        return self._last_time

    def parse(self, raw: bytes, ctx: ParseContext) -> Parsed:
        text = decode_text(raw, ctx).rstrip("\r\n")
        cells = self._layout.split(text)
        name = cells[self._name]
        known = self._names.get(name)
        if known is None:
            known = self._name_facts(name)
        name, source, domain = known
        if self._labels_last and '"' not in text:
            record = ",".join(cells[: len(self._keep)])
        else:
            record = join_cells([cells[i] for i in self._keep])
        host = cells[self._host]
        if not host:
            raise MissingField("host is empty")
        short = cells[self._short]
        if not short:
            raise MissingField("short is empty")
        # waiting alerts and per-asset state hold signatures: one copy of each
        shared = self._shared
        if len(shared) >= _MAX_SHARED:
            shared.clear()
        short = shared.setdefault(short, short)
        stamp = cells[self._time]
        if not stamp:
            raise BadTimestamp("time is empty")
        return [
            alert_from(
                {
                    "id": ctx.record_id,
                    "source": source,
                    "domain": domain,
                    "time": self._time_of(stamp),
                    "asset": host,
                    "ip": cells[self._ip] or None,
                    "signature": short,
                    "title": name,
                    "raw": record,
                }
            )
        ]
