"""The `--map` spec of the generic csv/jsonl formats, and typing of the mapped values.

`FIELD=COLUMN` takes a canonical field from a column (a dotted path for JSONL);
`FIELD:=VALUE` sets a literal. Items are comma-separated. `time`, `asset`, `signature` and
`domain` must be given; `end` fills `ended_at`. A numeric time is epoch seconds, any other
an ISO 8601 / RFC 3339 string (without a zone: `SOCNOC_DEFAULT_TZ`). A bad spec is a
`MapSpecError` when the adapter is built, never a per-record error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from schemas.adapters.base import ParseContext, epoch_to_datetime
from schemas.adapters.fields import parse_epoch_text, parse_time_text
from schemas.errors import BadTimestamp, BadValue, InvalidInput, MapSpecError, MissingField
from schemas.models import DOMAIN_BY_VALUE, STATUS_BY_VALUE, Domain, Severity, Status
from schemas.severity import from_label

__all__ = ["MapSpec", "MAP_FIELDS", "REQUIRED_FIELDS", "Converter", "convert", "converter", "finish"]

MAP_FIELDS = (
    "id",
    "time",
    "end",
    "asset",
    "signature",
    "title",
    "severity",
    "domain",
    "status",
    "source",
    "hostname",
    "ip",
    "mac",
    "device_id",
    "src_ip",
    "ref",
)
REQUIRED_FIELDS = ("time", "asset", "signature", "domain")
ALERT_KEY = {"end": "ended_at"}


def _text(value: Any, name: str, ctx: ParseContext | None = None) -> str | None:
    if type(value) is str:
        return value or None
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise BadValue(f"{name} must be a string or a number, not {type(value).__name__}")


def _time(value: Any, name: str, ctx: ParseContext) -> datetime | None:
    if value is None or value == "":
        return None
    if type(value) is float or (isinstance(value, int | float) and not isinstance(value, bool)):
        return epoch_to_datetime(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            float(text)
        except ValueError:
            return parse_time_text(text, ctx, name)
        return parse_epoch_text(text, name)  # numeric: epoch seconds (nan, -5: absurd)
    raise BadTimestamp(f"{name} must be a string or a number, not {type(value).__name__}")


def _severity(value: Any, name: str, ctx: ParseContext | None = None) -> Severity | None:
    label = _text(value, name)
    if label is None:
        return None
    low, high = from_label(label, Severity.INFO), from_label(label, Severity.CRITICAL)
    if low is not high:
        raise BadValue(f"{name} {label[:40]!r} is not a known severity label")
    return low


def _domain(value: Any, name: str, ctx: ParseContext | None = None) -> Domain | None:
    found = DOMAIN_BY_VALUE.get(value) if type(value) is str else None
    if found is not None:
        return found
    text = _text(value, name)
    if text is None:
        return None
    try:
        return Domain(text.strip().lower())
    except ValueError:
        raise BadValue(f"{name} {text[:40]!r} is neither security nor ops") from None


def _status(value: Any, name: str, ctx: ParseContext | None = None) -> Status | None:
    found = STATUS_BY_VALUE.get(value) if type(value) is str else None
    if found is not None:
        return found
    text = _text(value, name)
    if text is None:
        return None
    try:
        return Status(text.strip().lower())
    except ValueError:
        raise BadValue(f"{name} {text[:40]!r} is neither firing nor resolved") from None


# (value, field name, context) -> the Alert field's value, None when absent or empty
Converter = Callable[[Any, str, ParseContext], Any]
_CONVERTERS: Final[dict[str, Converter]] = {
    "time": _time,
    "end": _time,
    "severity": _severity,
    "domain": _domain,
    "status": _status,
}


def converter(field: str) -> Converter:
    """The conversion of `field`'s values (adapters look it up once, not per record)."""
    return _CONVERTERS.get(field, _text)


def convert(field: str, value: Any, ctx: ParseContext) -> Any:
    """A mapped raw value as the Alert field's type; None when absent or empty."""
    return converter(field)(value, field, ctx)


@dataclass(frozen=True)
class MapSpec:
    """A parsed `--map`: which column feeds each field, and the literal fields."""

    columns: dict[str, str]
    literals: dict[str, Any]

    @classmethod
    def parse(cls, spec: str | None) -> MapSpec:
        """Parse `FIELD=COLUMN,FIELD:=VALUE,...`; any mistake is a MapSpecError."""
        if not spec or not spec.strip():
            raise MapSpecError("this format needs --map (e.g. time=ts,asset=host,...)")
        columns: dict[str, str] = {}
        literals: dict[str, Any] = {}
        for item in spec.split(","):
            item = item.strip()
            field, eq, value = item.partition("=")
            literal = field.endswith(":")
            field = field.removesuffix(":").strip()
            if not eq or not field:
                raise MapSpecError(f"map item {item!r} is not FIELD=COLUMN or FIELD:=VALUE")
            if field not in MAP_FIELDS:
                raise MapSpecError(f"unknown map field {field!r}; known: {', '.join(MAP_FIELDS)}")
            if field in columns or field in literals:
                raise MapSpecError(f"map field {field!r} is given twice")
            value = value.strip()
            if not value:
                raise MapSpecError(f"map item {item!r} has an empty value")
            if literal:
                literals[field] = cls._literal(field, value)
            else:
                columns[field] = value
        missing = [f for f in REQUIRED_FIELDS if f not in columns and f not in literals]
        if missing:
            raise MapSpecError(f"the map must give {', '.join(missing)} (e.g. domain:=ops)")
        return cls(columns=columns, literals=literals)

    @staticmethod
    def _literal(field: str, value: str) -> Any:
        try:
            return convert(field, value, ParseContext(record_id="--map"))
        except InvalidInput as exc:
            raise MapSpecError(f"map literal {field}:={value!r}: {exc}") from None


def finish(values: dict[str, Any], ctx: ParseContext) -> dict[str, Any]:
    """Alert keyword arguments from converted values, with required ones checked."""
    if values.get("time") is None:
        raise BadTimestamp("time is missing or empty")
    for field in ("asset", "signature", "domain"):
        if values.get(field) is None:
            raise MissingField(f"{field} is missing or empty")
    if values.get("id") is None:
        values["id"] = ctx.record_id
    if "end" not in values:
        return values
    return {ALERT_KEY.get(k, k): v for k, v in values.items()}
