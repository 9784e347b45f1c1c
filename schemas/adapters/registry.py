"""Format names -> adapters, and reading a file as records (`<basename>:<line>`).

`get_adapter(name, options)` builds an adapter (`UnknownFormat` for an unknown name,
`MapSpecError` for a bad option). Files are read one physical line a record, 1-based; blank
lines are not records; a CSV format's first line is its header, handed to the adapter as the
`columns` option by `adapter_for_file` (so a CSV's first data row is line 2). A line longer
than the size limit is still one record: it is cut to `max_bytes + 1` bytes (the rest is
skipped without being held in memory) so the adapter rejects it with `RecordTooLarge`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final, final

from schemas.adapters.aitads import AitAdsAdapter
from schemas.adapters.alertmanager import AlertmanagerAdapter
from schemas.adapters.auto import AutoAdapter
from schemas.adapters.base import MAX_RECORD_BYTES, Adapter, ParseContext, Parsed
from schemas.adapters.bgl import BglAdapter
from schemas.adapters.ecs import EcsAdapter
from schemas.adapters.generic import GenericAlertAdapter
from schemas.adapters.mapped import CsvMapAdapter, JsonlMapAdapter
from schemas.adapters.mapspec import MapSpec
from schemas.adapters.suricata import SuricataAdapter
from schemas.adapters.syslog import SyslogAdapter
from schemas.adapters.wazuh import WazuhAdapter
from schemas.adapters.zabbix import ZabbixAdapter
from schemas.errors import DecodeError, MapSpecError, UnknownFormat

__all__ = [
    "FORMATS",
    "CSV_FORMATS",
    "RawRecord",
    "get_adapter",
    "adapter_for_file",
    "read_header",
    "read_records",
]

_FACTORIES: dict[str, Callable[[dict[str, str]], Adapter]] = {
    "auto": AutoAdapter,
    "alert": GenericAlertAdapter,
    "wazuh": WazuhAdapter,
    "suricata": SuricataAdapter,
    "ecs": EcsAdapter,
    "alertmanager": AlertmanagerAdapter,
    "zabbix": ZabbixAdapter,
    "syslog": SyslogAdapter,
    "bgl": BglAdapter,
    "aitads": AitAdsAdapter,
    "csv": CsvMapAdapter,
    "jsonl": JsonlMapAdapter,
}
_OPTIONS: dict[str, frozenset[str]] = {
    "aitads": frozenset({"columns"}),
    "csv": frozenset({"map", "columns"}),
    "jsonl": frozenset({"map"}),
}
FORMATS: tuple[str, ...] = tuple(_FACTORIES)
CSV_FORMATS = frozenset({"aitads", "csv"})


@final
class RawRecord:
    """One record of a file: its id (`<basename>:<line>`), 1-based line and bytes.

    Never changed once made (`Final`). One is made per line: a plain class, which compiled
    costs ~20 ns to make (a named tuple ~150, a frozen dataclass ~400).
    """

    __slots__ = ("record_id", "line", "raw")

    def __init__(self, record_id: str, line: int, raw: bytes) -> None:
        self.record_id: Final = record_id
        self.line: Final = line
        self.raw: Final = raw

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RawRecord):
            return NotImplemented
        return (self.record_id, self.line, self.raw) == (other.record_id, other.line, other.raw)

    def __hash__(self) -> int:
        return hash((self.record_id, self.line, self.raw))

    def __repr__(self) -> str:
        return f"RawRecord({self.record_id!r}, {self.line!r}, {self.raw!r})"


def get_adapter(name: str, options: dict[str, str] | None = None) -> Adapter:
    """The adapter of a format; options: `map` (csv, jsonl), `columns` (csv, aitads)."""
    options = dict(options or {})
    _check_options(name, options)
    return _FACTORIES[name](options)


def _check_options(name: str, options: dict[str, str]) -> None:
    if name not in _FACTORIES:
        raise UnknownFormat(f"unknown format {name!r}; known: {', '.join(FORMATS)}")
    unknown = sorted(set(options) - _OPTIONS.get(name, frozenset()))
    if unknown:
        raise MapSpecError(f"the {name} format takes no option {', '.join(unknown)}")


class _NoRecords:
    """Stands in for a CSV adapter of a file without a header (so without records)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def parse(self, raw: bytes, ctx: ParseContext) -> Parsed:
        raise DecodeError("a CSV record without a header")


def read_header(path: Path) -> str | None:
    """The first line of a file as text (a CSV header), or None for an empty file."""
    with path.open("rb") as handle:
        first = handle.readline(MAX_RECORD_BYTES + 1)
    if not first.strip():
        return None
    try:
        return first.decode("utf-8").removeprefix("\ufeff").rstrip("\r\n")
    except UnicodeDecodeError:
        raise MapSpecError("the CSV header is not UTF-8", path=str(path), line=1) from None


def adapter_for_file(path: Path, fmt: str, options: dict[str, str] | None = None) -> Adapter:
    """The adapter for one input file: CSV formats get the file's header as `columns`."""
    options = dict(options or {})
    if fmt in CSV_FORMATS and "columns" not in options:
        header = read_header(path)
        if header is None:
            _check_options(fmt, options)
            if fmt == "csv":
                MapSpec.parse(options.get("map"))  # a bad spec is reported all the same
            return _NoRecords(fmt)
        options["columns"] = header
    try:
        return get_adapter(fmt, options)
    except MapSpecError as exc:
        if exc.path is not None:
            raise
        raise MapSpecError(str(exc), path=str(path), line=1) from None


def read_records(path: Path, fmt: str, *, max_bytes: int = MAX_RECORD_BYTES) -> Iterator[RawRecord]:
    """The records of a file, one per non-blank physical line (a CSV header is skipped)."""
    if fmt not in _FACTORIES:
        raise UnknownFormat(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    base = path.name
    skip = 1 if fmt in CSV_FORMATS else 0
    cap = max_bytes + 1
    with path.open("rb") as handle:
        number = 0
        while True:
            chunk = handle.readline(cap)
            if not chunk:
                return
            number += 1
            if len(chunk) == cap and not chunk.endswith(b"\n"):
                # Too long: keep a cap-sized head (rejected by the adapter), skip the rest.
                rest = handle.readline(cap)
                while rest and not rest.endswith(b"\n"):
                    rest = handle.readline(cap)
                line = chunk
            else:
                line = chunk.rstrip(b"\r\n")
            if number <= skip or not line or line.isspace():
                continue
            yield RawRecord(f"{base}:{number}", number, line)
