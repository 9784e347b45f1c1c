"""Typed field access shared by the adapters: every wrong shape becomes an `InvalidInput`.

JSON sources are loosely typed; these helpers turn "missing", "wrong type" and "absurd time"
into `MissingField`, `BadValue` and `BadTimestamp` so no `KeyError`/`TypeError` escapes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import orjson
from pydantic import ValidationError

from schemas.adapters.base import ParseContext, check_time, decode_text, epoch_to_datetime
from schemas.errors import BadTimestamp, BadValue, DecodeError, MissingField
from schemas.models import Alert

__all__ = [
    "load_object",
    "lookup",
    "sub",
    "opt_str",
    "req_str",
    "id_str",
    "opt_int",
    "req_int",
    "parse_time",
    "parse_time_text",
    "parse_epoch_text",
    "str_list",
    "alert_from",
]

_MISSING: Any = object()


def load_object(raw: bytes, ctx: ParseContext) -> tuple[dict[str, Any], str]:
    """A JSON object record and its text (size-checked, UTF-8, JSON, an object)."""
    text = decode_text(raw, ctx)
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise DecodeError(f"a record must be a JSON object, not {type(obj).__name__}")
    return obj, text


def lookup(obj: dict[str, Any], path: str) -> Any:
    """The value at a dotted path, nested (`a: {b: 1}`) or flat (`"a.b": 1`); None if absent."""
    value = obj.get(path, _MISSING)
    if value is not _MISSING:
        return value
    head, dot, rest = path.partition(".")
    while dot:
        inner = obj.get(head, _MISSING)
        if isinstance(inner, dict):
            found = lookup(inner, rest)
            if found is not None:
                return found
        nxt, dot, rest = rest.partition(".")
        head = f"{head}.{nxt}"
    return None


def sub(obj: dict[str, Any], key: str) -> dict[str, Any]:
    """A nested object; absent or null gives {}, another type is a BadValue."""
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadValue(f"{key} must be an object, not {type(value).__name__}")
    return value


def opt_str(value: Any, name: str) -> str | None:
    """A string field; absent, null or empty gives None, a non-string is a BadValue."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    raise BadValue(f"{name} must be a string, not {type(value).__name__}")


def req_str(value: Any, name: str) -> str:
    """A required non-empty string field."""
    result = opt_str(value, name)
    if result is None:
        raise MissingField(f"{name} is missing or empty")
    return result


def id_str(value: Any, name: str) -> str:
    """A required id: a non-empty string or an integer, as text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return req_str(value, name)


def opt_int(value: Any, name: str) -> int | None:
    """An integer field (JSON number or digit string); absent/null/empty gives None."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise BadValue(f"{name} must be an integer, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and len(value) <= 20:
        try:
            return int(value)
        except ValueError:
            pass
    raise BadValue(f"{name} must be an integer, got {str(value)[:40]!r}")


def req_int(value: Any, name: str) -> int:
    """A required integer field."""
    result = opt_int(value, name)
    if result is None:
        raise MissingField(f"{name} is missing")
    return result


def parse_time_text(text: str, ctx: ParseContext, name: str) -> datetime:
    """An RFC 3339 / ISO 8601 string; without a zone it is in `ctx.default_tz`."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadTimestamp(f"{name} {text[:60]!r} is not an ISO 8601 timestamp") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=ctx.default_tz)
    return check_time(value)


def parse_epoch_text(text: str, name: str) -> datetime:
    """Epoch seconds written as text (`1642723347`, `15`, `1.5e9`)."""
    try:
        seconds: float = int(text) if text.isdigit() and len(text) < 20 else float(text)
    except ValueError:
        raise BadTimestamp(f"{name} {text[:40]!r} is not a number of epoch seconds") from None
    return epoch_to_datetime(seconds)


def parse_time(value: Any, ctx: ParseContext, name: str) -> datetime:
    """A timestamp field: an ISO 8601 string or epoch seconds (JSON number)."""
    if isinstance(value, str) and value:
        return parse_time_text(value, ctx, name)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return epoch_to_datetime(value)
    if value is None or value == "":
        raise BadTimestamp(f"{name} is missing")
    raise BadTimestamp(f"{name} must be a string or a number, not {type(value).__name__}")


def str_list(value: Any, name: str) -> tuple[str, ...]:
    """A string or a list of strings (ECS keyword arrays) as a tuple, without empties."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list):
        out: list[str] = []
        for item in value:
            if not isinstance(item, str):
                raise BadValue(f"{name} must hold strings, not {type(item).__name__}")
            if item and item not in out:
                out.append(item)
        return tuple(out)
    raise BadValue(f"{name} must be a string or a list of strings")


# `Alert(**fields)` without the keyword-argument round trip of `BaseModel.__init__`: the
# same validator, the same checks.
_validate_alert: Final = Alert.__pydantic_validator__.validate_python
# Pydantic gives every instance its own set of the field names it was given (728 bytes for
# an adapter's nine): alerts built from the same names share one. Alerts are frozen, so the
# set is never written; a handful of call sites give a handful of name lists.
_FIELDS_SETS: Final[dict[tuple[str, ...], set[str]]] = {}
_set_attr: Final = object.__setattr__


def alert_from(fields: dict[str, Any]) -> Alert:
    """Build and validate an Alert from its fields (a dict the caller gives up); a model
    violation is a BadValue, never a ValidationError. A dict, not keyword arguments: packed
    into a compiled function's `**fields` and out again they cost ~7,600 instructions an alert
    (the decode stage's 78,500 -> 70,900, `python -m bench.instructions`)."""
    try:
        alert: Alert = _validate_alert(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "alert"
        raise BadValue(f"{where}: {first['msg']}") from None
    names = tuple(fields)
    shared = _FIELDS_SETS.get(names)
    if shared is None:
        if len(_FIELDS_SETS) >= 256:
            _FIELDS_SETS.clear()
        shared = _FIELDS_SETS[names] = set(alert.__pydantic_fields_set__)
    _set_attr(alert, "__pydantic_fields_set__", shared)
    return alert
