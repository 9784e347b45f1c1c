"""Generic `csv` and `jsonl` formats, turned into alerts by a `--map` spec (see mapspec.py).

Without an `id` field the id is the record id (`<file>:<line>`). The CSV adapter needs its
header: the `columns` option (the file's first line, given by the reader, or a
comma-separated list when lines arrive one per Kafka message).
"""

from __future__ import annotations

from typing import Any

from schemas.adapters.base import ParseContext, Parsed, decode_text
from schemas.adapters.csvline import CsvLayout
from schemas.adapters.fields import alert_from, load_object, lookup
from schemas.adapters.mapspec import MapSpec, converter, finish
from schemas.errors import MapSpecError
from schemas.models import Alert

__all__ = ["CsvMapAdapter", "JsonlMapAdapter"]


class CsvMapAdapter:
    """CSV rows mapped to alerts; options `map` (required) and `columns` (the header)."""

    name = "csv"

    def __init__(self, options: dict[str, str] | None = None) -> None:
        options = options or {}
        self.spec = MapSpec.parse(options.get("map"))
        columns = options.get("columns")
        if not columns:
            raise MapSpecError("the csv format needs its header (the columns option)")
        self._layout = CsvLayout.from_header(columns)
        self._columns = [
            (field, self._layout.position(column), converter(field))
            for field, column in self.spec.columns.items()
        ]
        self._source = {"source": "csv"}

    def parse(self, raw: bytes, ctx: ParseContext) -> Parsed:
        text = decode_text(raw, ctx).rstrip("\r\n")
        cells = self._layout.split(text)
        values: dict[str, Any] = {**self._source, **self.spec.literals}
        for field, index, convert in self._columns:
            value = convert(cells[index], field, ctx)
            if value is not None:
                values[field] = value
        fields = finish(values, ctx)
        fields["raw"] = text
        return [alert_from(fields)]


class JsonlMapAdapter:
    """JSON object lines mapped to alerts by dotted paths; option `map` (required)."""

    name = "jsonl"

    def __init__(self, options: dict[str, str] | None = None) -> None:
        options = options or {}
        self.spec = MapSpec.parse(options.get("map"))
        # (a path without a dot is a plain key: `lookup` would only `get` it)
        self._paths = [(field, path, "." in path, converter(field)) for field, path in self.spec.columns.items()]
        self._source = {"source": "jsonl"}

    def parse(self, raw: bytes, ctx: ParseContext) -> Parsed:
        obj, text = load_object(raw, ctx)
        return [self.from_object(obj, text, ctx)]

    def from_object(self, obj: dict[str, Any], text: str, ctx: ParseContext) -> Alert:
        """The Alert of one decoded JSON object."""
        values: dict[str, Any] = {**self._source, **self.spec.literals}
        for field, path, dotted, convert in self._paths:
            value = convert(lookup(obj, path) if dotted else obj.get(path), field, ctx)
            if value is not None:
                values[field] = value
        fields = finish(values, ctx)
        fields["raw"] = text
        return alert_from(fields)
