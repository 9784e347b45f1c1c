"""Generic alerts in socnoc's canonical field names (what the HTTP gateway accepts) -> Alert.

A JSON object with the fields of `schemas.models.Alert` (`time` as RFC 3339 or epoch
seconds); `id` is optional (the record id is used), `raw` is set by socnoc, never by the
sender.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from schemas.adapters.base import ParseContext, Parsed
from schemas.adapters.fields import load_object, parse_time
from schemas.errors import BadValue
from schemas.models import Alert

__all__ = ["GenericAlertAdapter", "parse_generic"]


def parse_generic(item: Any, ctx: ParseContext, raw: str = "") -> Alert:
    """Validate one canonical alert object; errors are `InvalidInput` subclasses."""
    if not isinstance(item, dict):
        raise BadValue(f"an alert must be a JSON object, not {type(item).__name__}")
    if "raw" in item:
        raise BadValue("raw is set by socnoc, not by the sender")
    data = dict(item)
    data.setdefault("id", ctx.record_id)
    data["time"] = parse_time(item.get("time"), ctx, "time")
    if item.get("ended_at") is not None:
        data["ended_at"] = parse_time(item["ended_at"], ctx, "ended_at")
    data["raw"] = raw
    try:
        return Alert.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "alert"
        raise BadValue(f"{where}: {first['msg']}") from None


class GenericAlertAdapter:
    """Format `alert`: one canonical alert object per record."""

    name = "alert"

    def __init__(self, options: dict[str, str] | None = None) -> None:
        del options

    def parse(self, raw: bytes, ctx: ParseContext) -> Parsed:
        obj, text = load_object(raw, ctx)
        return [parse_generic(obj, ctx, text)]
